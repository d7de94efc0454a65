"""Numba CUDA kernels: fused step kernels, the persistent sequence kernel, and small helpers.

One block is a (KS, U) grid of threads: U hidden units, KS lanes each. The lanes of a unit split
the dot products over k (lane l takes k = l, l+KS, ...), so a warp reads a weight row coalesced;
each lane keeps the partial sums of all gates of the unit for a tile of BT batch rows in
registers. The partials meet in shared memory, where lane q sums slot q over the KS lanes in a
fixed order (the result never depends on scheduling), and lanes 0..BT-1 then run the cell's
pointwise math for one batch row each, straight from shared memory: no gates tensor is written.
The same code runs on a GPU (KS = 32: one warp per unit) and in Numba's CUDA simulator (small KS
and U, so CI can afford it); no warp shuffle is used, so nothing is GPU-only.

That kernel shares a weight load between at most BT_MAX batch rows. For larger batches
(use_tiled(N)) the tiled step kernels run instead, with the same arguments and plans: a block of
TILED_BLOCK threads computes BN batch rows x BU units for all slots, walking k in chunks of KC;
per chunk it stages the source rows and the part's weight rows in shared memory (coalesced
loads) and each thread accumulates a register block of RN rows x RU units x all slots, in
ascending k (a fixed order), then runs the same pointwise epilogue from its registers. Sequences
use them in the per-step loop (tiled_sequence_steps); the persistent kernel is the warp kernel.

Which gate rows go into which accumulator slot (a "plan"): x-part rows g in [x_lo, x_hi) go to
slot g - x_lo; recurrent rows g in [a_lo, a_hi) to slot a_slot + g - a_lo, read against h; rows
in [b_lo, b_hi) to slot b_slot + g - b_lo, read against h or, for the Cho GRU, r*h. The GRU's
recurrent n row has a slot of its own (PyTorch's r * (W_hn h + b_hn)); every other pair of x and
h parts shares a slot.

Kernels are built by factories, one per (cell, options, dtype, sizes), because Numba needs
shared and local array shapes as compile-time constants; builds are cached. All constants are
of the kernel's dtype, so a float32 kernel contains no float64 instruction (a test compiles them
to sm_90 PTX and checks).
"""
from __future__ import annotations

import functools
import math

import numpy as np

from gatedkernels.cuda._numba import SIMULATOR, cuda

LSTM, GRU, RNN = 0, 1, 2  # same codes as gatedkernels._ext

# Block shape. On a GPU a unit's lanes are one warp; BT batch rows share each weight load.
if SIMULATOR:
    KS, U_STEP, BT_MAX = 4, 2, 2  # the simulator pays ~0.1-0.3 ms per thread: keep blocks tiny
    GEMM_TILE = 4
else:
    KS, U_STEP, BT_MAX = 32, 4, 8
    GEMM_TILE = 16
KS1 = KS + 1  # padded lane stride of the reduction buffer: conflict-free writes and reads

# Tiled step kernels (large batches): a block computes BN batch rows x BU units, staging k in
# chunks of KC; each thread keeps RN rows x RU units x all slots in registers. Above
# TILED_ABOVE rows a step runs tiled (use_tiled). The GPU values are untuned (chosen without a
# GPU): 64 threads, 32 accumulators for the LSTM, 12 KiB of float32 tiles.
if SIMULATOR:
    BN, BU, KC, RN, RU = 4, 4, 4, 2, 2
    TILED_ABOVE = 3  # N = 3 stays on the warp kernel (two batch tiles there, one partial)
else:
    BN, BU, KC, RN, RU = 32, 16, 32, 4, 2
    TILED_ABOVE = BT_MAX  # the warp kernel shares a weight load between at most BT_MAX rows
TN, TU = BN // RN, BU // RU  # threads along rows and along units
TILED_BLOCK = TN * TU
RR = RU * RN  # outputs (row, unit) per thread
KC1 = KC + 1  # padded row stride of the shared tiles: conflict-free reads across rows

# Modes of the pointwise epilogue.
M_LSTM, M_RNN, M_GRU_LBR, M_GRU_R, M_GRU_MAIN, M_LSTM_M, M_PROJ = range(7)
# An LSTM with a projection (proj_size P > 0) runs as two plans: M_LSTM_M updates c and writes
# m = o * tanh(c') into a scratch [N, H]; M_PROJ then computes h' = W_hr m, one unit per output
# p (W_hr [P, H] takes the place of W_hh, m the place of h; no bias).

# plan: (mode, x_lo, x_hi, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_reads_rh, slots)
PLANS = {
    (LSTM, True): [(M_LSTM, 0, 4, 0, 4, 0, 0, 0, 0, False, 4)],
    (RNN, True): [(M_RNN, 0, 1, 0, 1, 0, 0, 0, 0, False, 1)],
    (GRU, True): [(M_GRU_LBR, 0, 3, 0, 2, 0, 2, 3, 3, False, 4)],
    # Cho et al.: r first for every unit (W_hn needs all of r*h), then z and n.
    (GRU, False): [(M_GRU_R, 0, 1, 0, 1, 0, 0, 0, 0, False, 1),
                   (M_GRU_MAIN, 1, 3, 1, 2, 0, 2, 3, 1, True, 2)],
}
GATES = {LSTM: 4, GRU: 3, RNN: 1}
PROJ_PLANS = [(M_LSTM_M,) + PLANS[(LSTM, True)][0][1:],
              (M_PROJ, 0, 0, 0, 1, 0, 0, 0, 0, False, 1)]
MODE_GATES = {M_LSTM: 4, M_LSTM_M: 4, M_RNN: 1, M_PROJ: 1, M_GRU_LBR: 3, M_GRU_R: 3,
              M_GRU_MAIN: 3}


def plans(kind, lbr, proj=False):
    if proj:
        return PROJ_PLANS
    return PLANS[(kind, bool(lbr) if kind == GRU else True)]


def _ceil_div(a, b):
    return -(-a // b)


def batch_tile(N):
    """Batch rows per tile for a batch of N: the power of two >= N, at most BT_MAX (a lane
    accumulates every row of its tile, so a tile wider than N wastes FLOPs)."""
    bt = 1
    while bt < N and bt < BT_MAX:
        bt *= 2
    return bt


def grid_for(H, N, U=None, BT=None):
    """Blocks of a step launch: (unit blocks, batch tiles)."""
    U = U or U_STEP
    BT = BT or batch_tile(N)
    return (_ceil_div(H, U), _ceil_div(N, BT))


# --------------------------------------------------------------------------- shared pieces


@functools.lru_cache(maxsize=None)
def _activations(dtype_name, relu):
    """sigmoid, tanh and the RNN's act (tanh or relu) for one dtype."""
    np_t = np.dtype(dtype_name).type
    zero, one = np_t(0), np_t(1)

    @cuda.jit(device=True, inline=True)
    def sigmoid(v):
        # exp only ever sees -|v|: never overflows, saturates to exactly 0 or 1, NaN stays NaN.
        if v >= zero:
            return one / (one + math.exp(-v))
        e = math.exp(v)
        return e / (one + e)

    @cuda.jit(device=True, inline=True)
    def tanh(v):
        return math.tanh(v)

    @cuda.jit(device=True, inline=True)
    def act(v):
        if relu:
            return zero if v < zero else v  # NaN falls through to v
        return math.tanh(v)

    return sigmoid, tanh, act


@functools.lru_cache(maxsize=None)
def _warp_functions(dtype_name, BT):
    """The warp kernels' dot-product accumulator and cross-lane reduction for one dtype."""
    zero = np.dtype(dtype_name).type(0)

    @cuda.jit(device=True, inline=True)
    def dot_rows(acc, W, rowbase, rowstride, src, K, g_lo, g_hi, slot, n0, N, lane, xs):
        """acc[(slot + g - g_lo)*BT + b] += W[rowbase + g*rowstride, k] * src[n0 + b, k] over
        this lane's k, for g in [g_lo, g_hi). Rows past N read row N-1 (results unused)."""
        for k in range(lane, K, KS):
            for b in range(BT):
                n = n0 + b
                if n > N - 1:
                    n = N - 1
                xs[b] = src[n, k]
            for g in range(g_lo, g_hi):
                w = W[rowbase + g * rowstride, k]
                base = (slot + g - g_lo) * BT
                for b in range(BT):
                    acc[base + b] += w * xs[b]

    @cuda.jit(device=True, inline=True)
    def reduce_slots(acc, part, sums, u, lane, QS):
        """sums[u, q] = sum over lanes of acc[q], in lane order. Every thread must call it."""
        for q in range(QS):
            part[u, q, lane] = acc[q]
        cuda.syncthreads()
        for q in range(lane, QS, KS):
            s = zero
            for ln in range(KS):
                s += part[u, q, ln]
            sums[u, q] = s
        cuda.syncthreads()

    return dot_rows, reduce_slots


@functools.lru_cache(maxsize=None)
def _pointwise(mode, relu, dtype_name):
    """pointwise(pre, c_old, h_old) -> (v, c'): the cell math of one (row, unit) from the plan's
    slot sums pre[NS] (biases included). v is h', except m = o*tanh(c') for M_LSTM_M and r*h
    for M_GRU_R; c' is the LSTM's new cell state (zero otherwise). c_old is read by the LSTM
    modes only, h_old by the GRU modes only."""
    sigmoid, tanh, act = _activations(dtype_name, relu)
    np_t = _np_type(dtype_name)
    zero, one = np_t(0), np_t(1)

    @cuda.jit(device=True, inline=True)
    def pointwise(pre, c_old, h_old):
        if mode == M_LSTM or mode == M_LSTM_M:
            c1 = sigmoid(pre[1]) * c_old + sigmoid(pre[0]) * tanh(pre[2])
            return sigmoid(pre[3]) * tanh(c1), c1
        if mode == M_PROJ:
            return pre[0], zero
        if mode == M_RNN:
            return act(pre[0]), zero
        if mode == M_GRU_LBR:
            r = sigmoid(pre[0])
            z = sigmoid(pre[1])
            return (one - z) * tanh(pre[2] + r * pre[3]) + z * h_old, zero
        if mode == M_GRU_R:
            return sigmoid(pre[0]) * h_old, zero
        z = sigmoid(pre[0])  # M_GRU_MAIN
        return (one - z) * tanh(pre[1]) + z * h_old, zero

    return pointwise


def _old_state(mode):
    """(reads c, reads h): which old states the plan's pointwise math needs."""
    return mode in (M_LSTM, M_LSTM_M), mode in (M_GRU_LBR, M_GRU_R, M_GRU_MAIN)


@functools.lru_cache(maxsize=None)
def _cell_epilogue(plan, relu, dtype_name):
    """finish(pre, n, j, H, h, c, b_ih, b_hh, h_out, c_out, rh): the biases, the cell math and
    the stores of one (row n, unit j) of a step kernel (the step_kernels arguments)."""
    mode, x_lo, x_hi, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_rh, NS = plan
    pointwise = _pointwise(mode, relu, dtype_name)
    reads_c, reads_h = _old_state(mode)
    zero = _np_type(dtype_name)(0)

    @cuda.jit(device=True, inline=True)
    def finish(pre, n, j, H, h, c, b_ih, b_hh, h_out, c_out, rh):
        for g in range(x_lo, x_hi):
            pre[g - x_lo] += b_ih[g * H + j]
        if mode != M_PROJ:
            for g in range(a_lo, a_hi):
                pre[a_slot + g - a_lo] += b_hh[g * H + j]
            for g in range(b_lo, b_hi):
                pre[b_slot + g - b_lo] += b_hh[g * H + j]
        v, c1 = pointwise(pre, c[n, j] if reads_c else zero, h[n, j] if reads_h else zero)
        if reads_c:
            c_out[n, j] = c1
        if mode == M_LSTM_M or mode == M_GRU_R:
            rh[n, j] = v
        else:
            h_out[n, j] = v

    return finish


@functools.lru_cache(maxsize=None)
def _seq_epilogue(plan, relu, dtype_name, bf):
    """finish(pre, s, n, j, H, xg, b_hh, lengths, hcur, hnxt, c, y, rh, m, reverse, col0): step
    s of a sequence for one (row n, unit j), as sequence_kernels documents its arguments: the
    x part from xg, b_hh, the cell math and the stores, at valid steps only; past row n's length
    the state is carried (hnxt = hcur)."""
    mode, x_lo, x_hi, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_rh, NS = plan
    pointwise = _pointwise(mode, relu, dtype_name)
    reads_c, reads_h = _old_state(mode)
    writes_h = mode != M_GRU_R and mode != M_LSTM_M
    zero = _np_type(dtype_name)(0)

    @cuda.jit(device=True, inline=True)
    def finish(pre, s, n, j, H, xg, b_hh, lengths, hcur, hnxt, c, y, rh, m, reverse, col0):
        ln = lengths[n]
        if s < ln:
            t = ln - 1 - s if reverse else s
            for g in range(x_lo, x_hi):
                if bf:
                    pre[g - x_lo] += xg[n, t, g * H + j]
                else:
                    pre[g - x_lo] += xg[t, n, g * H + j]
            if mode != M_PROJ:
                for g in range(a_lo, a_hi):
                    pre[a_slot + g - a_lo] += b_hh[g * H + j]
                for g in range(b_lo, b_hi):
                    pre[b_slot + g - b_lo] += b_hh[g * H + j]
            v, c1 = pointwise(pre, c[n, j] if reads_c else zero,
                              hcur[n, j] if reads_h else zero)
            if reads_c:
                c[n, j] = c1
            if mode == M_GRU_R:
                rh[n, j] = v
            elif mode == M_LSTM_M:
                m[n, j] = v
            else:
                hnxt[n, j] = v
                if bf:
                    y[n, t, col0 + j] = v
                else:
                    y[t, n, col0 + j] = v
        elif writes_h:
            hnxt[n, j] = hcur[n, j]  # past this row's length: carry the state

    return finish


def _np_type(dtype):
    return np.dtype(dtype).type


# --------------------------------------------------------------------------- step kernels


@functools.lru_cache(maxsize=None)
def step_kernels(kind, lbr, relu, dtype_name, BT=BT_MAX, proj=False):
    """One time step on raw PyTorch-layout weights, one kernel per plan (the Cho GRU and the
    projected LSTM have two).

    kernel[grid_for(H, N, BT=BT), (KS, U_STEP), stream](x, h, c, w_ih, w_hh, b_ih, b_hh, h_out,
    c_out, rh), BT = batch_tile(N) (or BT_MAX; any power of two up to BT_MAX works).
    c/c_out are used by the LSTM only and rh by the Cho GRU only (pass any 2-D array otherwise).
    With proj, the first kernel writes m = o*tanh(c') into rh [N, H] (and c_out), and the second
    is launched as kernel[grid_for(P, N), ...](m, m, any, any, w_hr, any, any, h_out, any, any)
    (x only gives N there).
    """
    return [_step_kernel(plan, relu, dtype_name, BT) for plan in plans(kind, lbr, proj)]


def _step_kernel(plan, relu, dtype_name, BT):
    mode, x_lo, x_hi, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_rh, NS = plan
    G = MODE_GATES[mode]
    dot_rows, reduce_slots = _warp_functions(dtype_name, BT)
    finish = _cell_epilogue(plan, relu, dtype_name)
    QS = NS * BT
    U = U_STEP
    ftype = _numba_type(dtype_name)

    @cuda.jit
    def step(x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, rh):
        lane = cuda.threadIdx.x
        u = cuda.threadIdx.y
        j = cuda.blockIdx.x * U + u
        n0 = cuda.blockIdx.y * BT
        N = x.shape[0]
        H = w_hh.shape[0] // G
        acc = cuda.local.array(QS, ftype)
        xs = cuda.local.array(BT, ftype)
        pre = cuda.local.array(NS, ftype)
        part = cuda.shared.array((U, QS, KS1), ftype)
        sums = cuda.shared.array((U, QS), ftype)
        for q in range(QS):
            acc[q] = 0
        if j < H:
            if x_hi > x_lo:
                dot_rows(acc, w_ih, j, H, x, x.shape[1], x_lo, x_hi, 0, n0, N, lane, xs)
            dot_rows(acc, w_hh, j, H, h, h.shape[1], a_lo, a_hi, a_slot, n0, N, lane, xs)
            if b_hi > b_lo:
                if b_rh:
                    dot_rows(acc, w_hh, j, H, rh, rh.shape[1], b_lo, b_hi, b_slot, n0, N, lane,
                             xs)
                else:
                    dot_rows(acc, w_hh, j, H, h, h.shape[1], b_lo, b_hi, b_slot, n0, N, lane, xs)
        reduce_slots(acc, part, sums, u, lane, QS)
        n = n0 + lane
        if lane < BT and j < H and n < N:
            for q in range(NS):
                pre[q] = sums[u, q * BT + lane]
            finish(pre, n, j, H, h, c, b_ih, b_hh, h_out, c_out, rh)

    return step


# --------------------------------------------------------------------------- tiled step kernels


def use_tiled(N):
    """True when a step of N batch rows runs the tiled kernels, False for the warp kernels."""
    return N > TILED_ABOVE


def tiled_grid(units, N):
    """Blocks of a tiled step launch (block: TILED_BLOCK threads): (unit tiles, batch tiles)."""
    return (_ceil_div(units, BU), _ceil_div(N, BN))


def step_config(kind, lbr, relu, dtype_name, N, proj=False):
    """(kernels, block, grid) of one cell step for a batch of N: the warp or tiled kernels per
    plan (arguments as step_kernels documents), and grid(units), the grid of a plan over
    `units` hidden units (H; P for the projection)."""
    if use_tiled(N):
        return (tiled_step_kernels(kind, lbr, relu, dtype_name, proj), (TILED_BLOCK,),
                functools.partial(tiled_grid, N=N))
    bt = batch_tile(N)
    return (step_kernels(kind, lbr, relu, dtype_name, bt, proj), (KS, U_STEP),
            functools.partial(grid_for, N=N, BT=bt))


def _part_gates(plan):
    """The most gate rows one part of the plan (x, a or b) reads: the weight tile's height."""
    mode, x_lo, x_hi, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_rh, NS = plan
    return max(x_hi - x_lo, a_hi - a_lo, b_hi - b_lo)


@functools.lru_cache(maxsize=None)
def _tile_functions(dtype_name):
    """The tiled kernels' shared pieces, (tile_part, next_output).

    Thread t of the block is (tn, tu) = (t % TN, t // TN); it owns rows n0 + tn + r*TN (r < RN)
    and units j0 + tu + v*TU (v < RU), strided so a partial tile spreads over all threads.
    Its register block acc holds slot q of output e = v*RN + r at acc[q*RR + e] (RR = RU*RN).

    tile_part(acc, st, ws, xs, W, src, H, N, g_lo, g_hi, slot, n0, j0) is the product of one
    plan part: acc[(slot + g - g_lo)*RR + e] += sum_k W[g*H + j, k] * src[n, k] for g in
    [g_lo, g_hi), k ascending (a fixed order). Per chunk of KC columns the block stages src
    rows n0.. into st [BN, KC1] and the part's weight rows into ws [(g_hi-g_lo)*BU, KC1]
    (row (g - g_lo)*BU + jj holds unit j0 + jj), both read coalesced along k and zero outside
    N, H and K. Every thread must call it (it synchronises the block).

    next_output(acc, pre, NS, e, n0, j0) copies output 0's NS slots to pre and rotates every
    slot's outputs down by one, so the epilogue visits e = 0, 1, ... always reading index 0: acc
    is only ever indexed by constants (it stays in registers) although the loop over the
    outputs, with the whole cell math in its body, is not unrolled. It returns output e's
    (row n, unit j).
    """
    zero = _np_type(dtype_name)(0)

    @cuda.jit(device=True, inline=True)
    def tile_part(acc, st, ws, xs, W, src, H, N, g_lo, g_hi, slot, n0, j0):
        tid = cuda.threadIdx.x
        tn = tid % TN
        tu = tid // TN
        K = src.shape[1]
        for k0 in range(0, K, KC):
            for e in range(tid, BN * KC, TILED_BLOCK):
                b = e // KC
                kk = e - b * KC
                n = n0 + b
                k = k0 + kk
                st[b, kk] = src[n, k] if n < N and k < K else zero
            for e in range(tid, (g_hi - g_lo) * BU * KC, TILED_BLOCK):
                row = e // KC
                kk = e - row * KC
                q = row // BU
                j = j0 + row - q * BU
                k = k0 + kk
                ws[row, kk] = W[(g_lo + q) * H + j, k] if j < H and k < K else zero
            cuda.syncthreads()
            for kk in range(KC):
                for r in range(RN):
                    xs[r] = st[tn + r * TN, kk]
                for q in range(g_hi - g_lo):
                    for v in range(RU):
                        w = ws[q * BU + tu + v * TU, kk]
                        base = (slot + q) * RR + v * RN
                        for r in range(RN):
                            acc[base + r] += w * xs[r]
            cuda.syncthreads()

    @cuda.jit(device=True, inline=True)
    def next_output(acc, pre, NS, e, n0, j0):
        for q in range(NS):
            pre[q] = acc[q * RR]
            for i in range(RR - 1):
                acc[q * RR + i] = acc[q * RR + i + 1]
        tid = cuda.threadIdx.x
        return n0 + tid % TN + (e % RN) * TN, j0 + tid // TN + (e // RN) * TU

    return tile_part, next_output


@functools.lru_cache(maxsize=None)
def _tile_recurrent(plan, dtype_name):
    """recurrent(acc, st, ws, xs, w_hh, h, rh, H, N, n0, j0): the recurrent parts of `plan`
    (W_hh against h, and the GRU's n row against h or, for the Cho GRU, r*h) via tile_part."""
    _, _, _, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_rh, _ = plan
    tile_part, _ = _tile_functions(dtype_name)

    @cuda.jit(device=True, inline=True)
    def recurrent(acc, st, ws, xs, w_hh, h, rh, H, N, n0, j0):
        tile_part(acc, st, ws, xs, w_hh, h, H, N, a_lo, a_hi, a_slot, n0, j0)
        if b_hi > b_lo:
            if b_rh:
                tile_part(acc, st, ws, xs, w_hh, rh, H, N, b_lo, b_hi, b_slot, n0, j0)
            else:
                tile_part(acc, st, ws, xs, w_hh, h, H, N, b_lo, b_hi, b_slot, n0, j0)

    return recurrent


@functools.lru_cache(maxsize=None)
def tiled_step_kernels(kind, lbr, relu, dtype_name, proj=False):
    """The tiled counterparts of step_kernels: the same arguments, plans and results, launched
    as kernel[tiled_grid(H, N), TILED_BLOCK, stream](...) (tiled_grid(P, N) for the projection).
    """
    return [_tiled_step_kernel(plan, relu, dtype_name) for plan in plans(kind, lbr, proj)]


def _tiled_step_kernel(plan, relu, dtype_name):
    mode, x_lo, x_hi, NS = plan[0], plan[1], plan[2], plan[-1]
    G = MODE_GATES[mode]
    tile_part, next_output = _tile_functions(dtype_name)
    recurrent = _tile_recurrent(plan, dtype_name)
    finish = _cell_epilogue(plan, relu, dtype_name)
    QS = NS * RR
    WR = _part_gates(plan) * BU
    ftype = _numba_type(dtype_name)

    @cuda.jit
    def step(x, h, c, w_ih, w_hh, b_ih, b_hh, h_out, c_out, rh):
        st = cuda.shared.array((BN, KC1), ftype)
        ws = cuda.shared.array((WR, KC1), ftype)
        acc = cuda.local.array(QS, ftype)
        xs = cuda.local.array(RN, ftype)
        pre = cuda.local.array(NS, ftype)
        j0 = cuda.blockIdx.x * BU
        n0 = cuda.blockIdx.y * BN
        N = x.shape[0]
        H = w_hh.shape[0] // G
        for q in range(QS):
            acc[q] = 0
        if x_hi > x_lo:
            tile_part(acc, st, ws, xs, w_ih, x, H, N, x_lo, x_hi, 0, n0, j0)
        recurrent(acc, st, ws, xs, w_hh, h, rh, H, N, n0, j0)
        for e in range(RR):
            n, j = next_output(acc, pre, NS, e, n0, j0)
            if n < N and j < H:
                finish(pre, n, j, H, h, c, b_ih, b_hh, h_out, c_out, rh)

    return step


@functools.lru_cache(maxsize=None)
def tiled_sequence_steps(kind, lbr, relu, dtype_name, batch_first, proj=False):
    """The tiled counterparts of sequence_kernels' steps (the per-step loop of a sequence):
    the same arguments, launched as step[tiled_grid(H, N), TILED_BLOCK, stream](s, ...) per
    plan per step (tiled_grid(P, N) for the projection)."""
    plan_list = plans(kind, lbr, proj)
    return [_tiled_sequence_step(plan, relu, dtype_name, bool(batch_first), proj and i == 1)
            for i, plan in enumerate(plan_list)]


def _tiled_sequence_step(plan, relu, dtype_name, bf, use_w_hr):
    mode, a_lo, a_hi, a_slot, NS = plan[0], plan[3], plan[4], plan[5], plan[-1]
    GP = MODE_GATES[mode]
    tile_part, next_output = _tile_functions(dtype_name)
    recurrent = _tile_recurrent(plan, dtype_name)
    finish = _seq_epilogue(plan, relu, dtype_name, bf)
    QS = NS * RR
    WR = _part_gates(plan) * BU
    ftype = _numba_type(dtype_name)

    @cuda.jit
    def step(s, xg, w_hh, w_hr, b_hh, lengths, hbuf, c, y, rh, m, reverse, col0):
        st = cuda.shared.array((BN, KC1), ftype)
        ws = cuda.shared.array((WR, KC1), ftype)
        acc = cuda.local.array(QS, ftype)
        xs = cuda.local.array(RN, ftype)
        pre = cuda.local.array(NS, ftype)
        hcur = hbuf[s % 2]
        hnxt = hbuf[(s + 1) % 2]
        j0 = cuda.blockIdx.x * BU
        n0 = cuda.blockIdx.y * BN
        N = hcur.shape[0]
        for q in range(QS):
            acc[q] = 0
        # x parts come precomputed in xg; the projection reads W_hr against m
        if use_w_hr:
            H = w_hr.shape[0] // GP
            tile_part(acc, st, ws, xs, w_hr, m, H, N, a_lo, a_hi, a_slot, n0, j0)
        else:
            H = w_hh.shape[0] // GP
            recurrent(acc, st, ws, xs, w_hh, hcur, rh, H, N, n0, j0)
        for e in range(RR):
            n, j = next_output(acc, pre, NS, e, n0, j0)
            if n < N and j < H:
                finish(pre, s, n, j, H, xg, b_hh, lengths, hcur, hnxt, c, y, rh, m, reverse,
                       col0)

    return step


def _numba_type(dtype_name):
    from gatedkernels.cuda._numba import numba

    return numba.float32 if dtype_name == "float32" else numba.float64


# --------------------------------------------------------------------------- sequences


def seq_units(G, P, itemsize, BT=BT_MAX):
    """(U, fits) for the persistent kernel: the most units per block (U_STEP, 2 or 1) whose
    W_hh rows (G*U rows of P) fit in the 48 KiB of static shared memory a block may have next to
    the reduction buffers; (U_STEP, False) when not even one unit's rows fit."""
    QS = 4 * BT
    for U in sorted({U_STEP, 2, 1}, reverse=True):
        if (U * QS * (KS + 1) + U * QS + G * U * P) * itemsize <= 48 * 1024:
            return U, True
    return U_STEP, False


@functools.lru_cache(maxsize=None)
def sequence_kernels(kind, lbr, relu, dtype_name, batch_first, cache_P, U, BT=BT_MAX,
                     proj=False):
    """(persistent, steps): the recurrence of one layer-direction over a whole sequence.

    persistent[grid, (KS, U), stream](xg, w_hh, w_hr, b_hh, lengths, hbuf, c, y, rh, m,
    reverse, col0) runs all T steps in one cooperative launch: a grid-stride loop over (unit
    block, batch tile) items, one grid barrier per step (two for the Cho GRU and the projected
    LSTM). With cache_P > 0 (= P), each block keeps its units' W_hh rows in shared memory for all
    T steps; that needs the grid to be exactly the number of unit blocks. steps[i] is plan i of
    one step as an ordinary kernel taking the step index first, one launch per plan per step:
    the fallback where a cooperative launch is not possible.

    xg [T, N, G*H] (or [N, T, G*H] batch_first) is the input projection with b_ih added; hbuf
    [2, N, P] holds h_{s} in hbuf[s % 2] (hbuf[0] = h0 on entry; h_T ends in hbuf[T % 2]); c
    [N, H] is c0 on entry and c_T on exit (LSTM); y [T, N, D*P] gets this direction's h in
    columns col0 .. col0+P-1 at valid steps only; lengths [N] int32; rh [N, H] is the Cho GRU's
    r*h and m [N, H] the projected LSTM's o*tanh(c'); w_hr [P, H] (proj only). Arguments a cell
    does not use may be any array of the right rank.
    """
    plan_list = plans(kind, lbr, proj)
    G = GATES[kind]
    dot_rows, reduce_slots = _warp_functions(dtype_name, BT)
    zero = _np_type(dtype_name)(0)
    ftype = _numba_type(dtype_name)
    QS = 4 * BT  # largest plan: 4 slots
    cache = cache_P > 0
    WROWS = G * U if cache else 1
    WCOLS = cache_P if cache else 1
    bf = bool(batch_first)
    two = len(plan_list) == 2

    def make_phase(plan, use_cache):
        mode, x_lo, x_hi, a_lo, a_hi, a_slot, b_lo, b_hi, b_slot, b_rh, NS = plan
        GP = MODE_GATES[mode]
        PQS = NS * BT
        finish = _seq_epilogue(plan, relu, dtype_name, bf)

        @cuda.jit(device=True)
        def phase(s, xg, w, ws, b_hh, lengths, src, hcur, hnxt, c, y, rh, m, reverse, col0,
                  part, sums, acc, xs, pre, item0, istep):
            lane = cuda.threadIdx.x
            u = cuda.threadIdx.y
            N = hcur.shape[0]
            H = w.shape[0] // GP  # this phase's units (P for the projection)
            K = src.shape[1]
            nub = (H + U - 1) // U
            items = nub * ((N + BT - 1) // BT)
            for item in range(item0, items, istep):
                ub = item % nub
                n0 = (item // nub) * BT
                j = ub * U + u
                for q in range(PQS):
                    acc[q] = 0
                if j < H:
                    if use_cache:
                        dot_rows(acc, ws, u, U, src, K, a_lo, a_hi, a_slot, n0, N, lane, xs)
                    else:
                        dot_rows(acc, w, j, H, src, K, a_lo, a_hi, a_slot, n0, N, lane, xs)
                    if b_hi > b_lo:
                        if b_rh:
                            if use_cache:
                                dot_rows(acc, ws, u, U, rh, H, b_lo, b_hi, b_slot, n0, N, lane,
                                         xs)
                            else:
                                dot_rows(acc, w, j, H, rh, H, b_lo, b_hi, b_slot, n0, N, lane,
                                         xs)
                        else:
                            if use_cache:
                                dot_rows(acc, ws, u, U, src, K, b_lo, b_hi, b_slot, n0, N,
                                         lane, xs)
                            else:
                                dot_rows(acc, w, j, H, src, K, b_lo, b_hi, b_slot, n0, N, lane,
                                         xs)
                reduce_slots(acc, part, sums, u, lane, PQS)
                n = n0 + lane
                if lane < BT and j < H and n < N:
                    for q in range(NS):
                        pre[q] = sums[u, q * BT + lane]
                    finish(pre, s, n, j, H, xg, b_hh, lengths, hcur, hnxt, c, y, rh, m,
                           reverse, col0)

        return phase

    phase_first = make_phase(plan_list[0], cache)
    phase_last = make_phase(plan_list[-1], cache and not proj)

    @cuda.jit(device=True, inline=True)
    def load_ws(ws, w_hh):
        H = w_hh.shape[0] // G
        P = w_hh.shape[1]
        ub = cuda.blockIdx.x
        nthreads = cuda.blockDim.x * cuda.blockDim.y
        tid = cuda.threadIdx.y * cuda.blockDim.x + cuda.threadIdx.x
        for idx in range(tid, WROWS * P, nthreads):
            r = idx // P
            k = idx - r * P
            g = r // U
            j = ub * U + (r - g * U)
            ws[r, k] = w_hh[g * H + j, k] if j < H else zero
        cuda.syncthreads()

    @cuda.jit
    def persistent(xg, w_hh, w_hr, b_hh, lengths, hbuf, c, y, rh, m, reverse, col0):
        part = cuda.shared.array((U, QS, KS1), ftype)
        sums = cuda.shared.array((U, QS), ftype)
        ws = cuda.shared.array((WROWS, WCOLS), ftype)
        acc = cuda.local.array(QS, ftype)
        xs = cuda.local.array(BT, ftype)
        pre = cuda.local.array(4, ftype)
        grid = cuda.cg.this_grid()
        if cache:
            load_ws(ws, w_hh)
        T = y.shape[1] if bf else y.shape[0]
        for s in range(T):
            hcur = hbuf[s % 2]
            hnxt = hbuf[(s + 1) % 2]
            phase_first(s, xg, w_hh, ws, b_hh, lengths, hcur, hcur, hnxt, c, y, rh, m,
                        reverse, col0, part, sums, acc, xs, pre, cuda.blockIdx.x,
                        cuda.gridDim.x)
            grid.sync()
            if two:
                if proj:
                    phase_last(s, xg, w_hr, ws, b_hh, lengths, m, hcur, hnxt, c, y, rh, m,
                               reverse, col0, part, sums, acc, xs, pre, cuda.blockIdx.x,
                               cuda.gridDim.x)
                else:
                    phase_last(s, xg, w_hh, ws, b_hh, lengths, hcur, hcur, hnxt, c, y, rh, m,
                               reverse, col0, part, sums, acc, xs, pre, cuda.blockIdx.x,
                               cuda.gridDim.x)
                grid.sync()

    def make_step(phase, last):
        use_w_hr = proj and last

        @cuda.jit
        def step(s, xg, w_hh, w_hr, b_hh, lengths, hbuf, c, y, rh, m, reverse, col0):
            part = cuda.shared.array((U, QS, KS1), ftype)
            sums = cuda.shared.array((U, QS), ftype)
            acc = cuda.local.array(QS, ftype)
            xs = cuda.local.array(BT, ftype)
            pre = cuda.local.array(4, ftype)
            hcur = hbuf[s % 2]
            hnxt = hbuf[(s + 1) % 2]
            if use_w_hr:
                phase(s, xg, w_hr, w_hr, b_hh, lengths, m, hcur, hnxt, c, y, rh, m, reverse,
                      col0, part, sums, acc, xs, pre, cuda.blockIdx.x, cuda.gridDim.x)
            else:
                phase(s, xg, w_hh, w_hh, b_hh, lengths, hcur, hcur, hnxt, c, y, rh, m,
                      reverse, col0, part, sums, acc, xs, pre, cuda.blockIdx.x,
                      cuda.gridDim.x)

        return step

    # the loop fallback's phases read W_hh from global memory (no shared-memory cache)
    loop_first = make_phase(plan_list[0], False) if cache else phase_first
    loop_last = make_phase(plan_list[-1], False) if cache else phase_last
    steps = [make_step(loop_first, False)] + ([make_step(loop_last, True)] if two else [])
    return persistent, steps


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def gemm_bias_kernel(dtype_name):
    """out[r, c] = sum_k a[r, k] * w[c, k] + b[c]: the input projection when the caller's arrays
    come from no library with a BLAS (numba device arrays). Shared-memory tiles of GEMM_TILE²,
    one output per thread; launch with gemm_grid()."""
    TS = GEMM_TILE
    TS1 = TS + 1
    ftype = _numba_type(dtype_name)
    zero = _np_type(dtype_name)(0)

    @cuda.jit
    def gemm_bias(a, w, b, out):
        ta = cuda.shared.array((TS, TS1), ftype)
        tw = cuda.shared.array((TS, TS1), ftype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        r = cuda.blockIdx.y * TS + ty
        col = cuda.blockIdx.x * TS + tx
        M, K = a.shape
        C = w.shape[0]
        wrow = cuda.blockIdx.x * TS + ty
        s = zero
        for k0 in range(0, K, TS):
            k = k0 + tx
            ta[ty, tx] = a[r, k] if (r < M and k < K) else zero
            tw[ty, tx] = w[wrow, k] if (wrow < C and k < K) else zero
            cuda.syncthreads()
            for kk in range(TS):
                s += ta[ty, kk] * tw[tx, kk]
            cuda.syncthreads()
        if r < M and col < C:
            out[r, col] = s + b[col]

    return gemm_bias


def gemm_grid(M, C):
    return (_ceil_div(C, GEMM_TILE), _ceil_div(M, GEMM_TILE)), (GEMM_TILE, GEMM_TILE)


@functools.lru_cache(maxsize=None)
def copy_kernel(dtype_name):
    """dst[i, j] = src[i, j] (or 0 where zero is true), grid-stride over the elements."""

    zero = _np_type(dtype_name)(0)

    @cuda.jit
    def copy2d(src, dst, zero_fill):
        start = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        stride = cuda.gridDim.x * cuda.blockDim.x
        R, C = dst.shape
        for i in range(start, R * C, stride):
            r = i // C
            col = i - r * C
            dst[r, col] = zero if zero_fill else src[r, col]

    return copy2d


COPY_BLOCK = 32 if SIMULATOR else 256


def copy_grid(n):
    return max(1, min(_ceil_div(n, COPY_BLOCK), 1 if SIMULATOR else 1024)), COPY_BLOCK
