# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# distutils: language = c++
"""Binding to the C++ kernels (csrc/). Thin on purpose: it reads shapes and data pointers of
NumPy arrays, checks that they agree with what the kernel will touch (so that no call, however
wrong, can make the kernel read or write out of bounds), releases the GIL when the call does
enough work to pay for it, and calls. It holds no arithmetic, no defaults and no policy: the API
(gatedkernels/_api.py) validates arguments, casts dtypes and allocates outputs.

Arrays are taken as ``cnp.ndarray`` and read through the PyArray_* macros: about 60 ns for a
five-array call, against about 1.2 us with typed memoryviews (research/build.md §1).
"""
from libc.stdint cimport int64_t
from libc.string cimport memcpy
from libcpp cimport bool as cbool
from libcpp.vector cimport vector
cimport cython
cimport numpy as cnp
import numpy as np

from gatedkernels._ext cimport (
    CellSpec, LayerDims, SeqShape, RawWeights, gate_count, block_width, packed_layer_size,
    pack_layer, step_workspace_size, step_forward, raw_step_workspace_size, raw_step_forward,
    sequence_workspace_size, sequence_forward, activation_forward, isa_count, isa_name,
    isa_supported, isa_best, c_get_num_threads, c_set_num_threads,
)

cnp.import_array()

ctypedef const float* cfloat_ptr
ctypedef const double* cdouble_ptr

# Below this many multiply-adds a call keeps the GIL: releasing and retaking it costs ~50 ns,
# and 2^17 multiply-adds take 1.3-3 us (a one-row step reads its weights at ~45 G values/s from
# L2). At 2^15 the LSTM stream step (1, 64, 64), 0.85 us, released it and ran 7% slower.
cdef enum:
    GIL_RELEASE_WORK = 131072

# A kernel keeps its last workspace up to this size for the next call: allocating one costs about
# 0.3 us, a tenth of a small sequence call; a larger one is a rounding error beside the call's work.
cdef enum:
    WS_KEEP_BYTES = 1 << 20

LSTM = 0
GRU = 1
RNN = 2


def get_num_threads():
    """Threads the kernels may use (the calling thread included)."""
    return c_get_num_threads()


def set_num_threads(int n):
    """Let the kernels use up to n threads (n >= 1). Results do not depend on n, to the bit."""
    if n < 1:
        raise ValueError(f"n: expected an integer >= 1, got {n}")
    c_set_num_threads(n)


def isa_names():
    """Names of the instruction-set builds compiled in, from the most portable to the fastest."""
    return [isa_name(i).decode() for i in range(isa_count())]


def supported_isas():
    """The builds this CPU can run."""
    return [isa_name(i).decode() for i in range(isa_count()) if isa_supported(i)]


def best_isa():
    return isa_name(isa_best()).decode()


cdef int _isa_index(str name) except -1:
    cdef int i
    for i in range(isa_count()):
        if isa_name(i).decode() == name:
            if not isa_supported(i):
                raise ValueError(f"isa: this CPU cannot run the {name!r} build "
                                 f"(supported: {supported_isas()})")
            return i
    raise ValueError(f"isa: expected one of {isa_names()}, got {name!r}")


def block_widths(str isa):
    """Packed block width (hidden units per block) per dtype for build `isa`."""
    cdef int i = _isa_index(isa)
    return {"float32": block_width[float](i), "float64": block_width[double](i)}


cdef inline int _typenum(object dtype) except -1:
    if dtype == np.float32:
        return cnp.NPY_FLOAT32
    if dtype == np.float64:
        return cnp.NPY_FLOAT64
    raise TypeError(f"dtype must be float32 or float64, got {dtype}")


cdef int _check(cnp.ndarray a, str name, int typenum, int64_t d0, int64_t d1=-2,
                int64_t d2=-2, bint writable=False) except -1:
    """a must be a C-contiguous array of `typenum` with exactly the dims given (-2: no dim)."""
    if a is None:
        raise ValueError(f"{name}: an array is required")
    cdef int ndim = 1 + (d1 != -2) + (d2 != -2)
    cdef int64_t want[3]
    want[0], want[1], want[2] = d0, d1, d2
    if cnp.PyArray_TYPE(a) != typenum or not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{name}: kernel expects dtype {_dtype_name(typenum)} in native byte "
                        f"order, got {a.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name}: kernel expects a C-contiguous array")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name}: kernel output must be writable")
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    cdef bint ok = cnp.PyArray_NDIM(a) == ndim
    cdef int i
    if ok:
        for i in range(ndim):
            ok = ok and dims[i] == want[i]
    if not ok:
        raise ValueError(f"{name}: kernel expects shape {tuple([want[i] for i in range(ndim)])}, "
                         f"got {(<object>a).shape}")
    return 0


cdef inline bint _plain_nd(object a, int ndim, int typenum):
    """A NumPy array (not a subclass) of `ndim` dimensions and this dtype, C-contiguous and
    aligned: what the kernels read without a copy."""
    return type(a) is cnp.ndarray and cnp.PyArray_NDIM(<cnp.ndarray>a) == ndim and \
        cnp.PyArray_TYPE(<cnp.ndarray>a) == typenum and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)


cdef inline bint _plain_out(object a, cnp.npy_intp* dims, int typenum):
    """An output the kernels write as is: a plain NumPy array of dims [N, cols], C-contiguous,
    aligned and writable."""
    return _plain_nd(a, 2, typenum) and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a) and \
        cnp.PyArray_DIMS(<cnp.ndarray>a)[0] == dims[0] and \
        cnp.PyArray_DIMS(<cnp.ndarray>a)[1] == dims[1]


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether two C-contiguous arrays share memory: their byte ranges intersect."""
    cdef char* pa = <char*>cnp.PyArray_DATA(a)
    cdef char* pb = <char*>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef str _dtype_name(int typenum):
    return "float32" if typenum == cnp.NPY_FLOAT32 else "float64"


cdef inline const void* _ptr_or_null(cnp.ndarray a):
    return NULL if a is None else cnp.PyArray_DATA(a)


cdef cnp.ndarray _aligned_empty(int64_t n, object dtype):
    """An uninitialized 1-D array of n elements whose data starts on a 64-byte boundary.

    NumPy only promises 16-byte alignment. The kernels' vector loads of packed weights and
    workspace rows are 64 bytes wide (AVX-512), so an unaligned buffer splits every load over two
    cache lines, and where a buffer lands then decides the speed of a call from run to run.
    """
    dt = np.dtype(dtype)
    cdef int64_t item = dt.itemsize
    cdef cnp.ndarray raw = np.empty(max(n, 1) + 64 // item, dtype=dt)
    cdef int64_t off = ((-<int64_t><size_t>cnp.PyArray_DATA(raw)) % 64) // item
    return raw[off:off + max(n, 1)]


cdef CellSpec _spec(int kind, bint linear_before_reset, bint relu) except *:
    if kind not in (LSTM, GRU, RNN):
        raise ValueError(f"unknown cell kind {kind}")
    cdef CellSpec s
    s.kind = kind
    s.linear_before_reset = linear_before_reset
    s.relu = relu
    return s


cdef class Kernel:
    """Packed weights of an L-layer, D-direction cell stack, and the calls that use them.

    ``layers`` lists, layer-major then direction, tuples (w_ih, w_hh, b_ih, b_hh, w_hr) of
    C-contiguous arrays of ``dtype`` in PyTorch layout (biases and w_hr may be None). Packing
    happens here, once; the arrays are not kept.
    """
    cdef readonly int kind, G, L, D
    cdef readonly bint linear_before_reset, relu
    cdef readonly int64_t I, H, P
    cdef readonly object dtype
    cdef readonly str isa       # the build that packed the weights; every call uses it
    cdef int isa_i
    cdef int typenum
    cdef CellSpec spec
    cdef list packed            # one ndarray per layer-direction (owns the memory)
    cdef vector[cfloat_ptr] ptr_f
    cdef vector[cdouble_ptr] ptr_d
    cdef cnp.ndarray ws         # the workspace kept between calls (_take_ws)
    cdef bint ws_busy           # a call holds it
    cdef bint step_parity       # the block order of the next step() call

    def __init__(self, int kind, bint linear_before_reset, bint relu, dtype, int64_t I,
                 int64_t H, int64_t P, int L, int D, list layers, str isa):
        self.isa_i = _isa_index(isa)
        self.isa = isa
        self.spec = _spec(kind, linear_before_reset, relu)
        self.kind, self.linear_before_reset, self.relu = kind, linear_before_reset, relu
        self.typenum = _typenum(dtype)
        self.dtype = np.dtype(dtype)
        if I < 1 or H < 1 or P < 1 or L < 1 or D not in (1, 2):
            raise ValueError(f"bad kernel sizes I={I} H={H} P={P} L={L} D={D}")
        if P != H and kind != LSTM:
            raise ValueError("only an LSTM can have a projection (P != H)")
        if len(layers) != L * D:
            raise ValueError(f"expected {L * D} layer-direction weight tuples, got {len(layers)}")
        self.G = gate_count(kind)
        self.I, self.H, self.P, self.L, self.D = I, H, P, L, D
        self.packed = []
        self.ws = None
        self.ws_busy = False
        cdef LayerDims dims
        cdef RawWeights[float] rf
        cdef RawWeights[double] rd
        cdef cnp.ndarray w_ih, w_hh, b_ih, b_hh, w_hr, out
        cdef int64_t GH = self.G * H, size
        for idx, t in enumerate(layers):
            w_ih, w_hh, b_ih, b_hh, w_hr = t
            dims.I = I if idx < D else D * P
            dims.H = H
            dims.P = P
            _check(w_ih, "w_ih", self.typenum, GH, dims.I)
            _check(w_hh, "w_hh", self.typenum, GH, P)
            if b_ih is not None:
                _check(b_ih, "b_ih", self.typenum, GH)
            if b_hh is not None:
                _check(b_hh, "b_hh", self.typenum, GH)
            if (w_hr is not None) != (P != H):
                raise ValueError("w_hr must be given exactly when P != H")
            if w_hr is not None:
                _check(w_hr, "w_hr", self.typenum, P, H)
            if self.typenum == cnp.NPY_FLOAT32:
                size = packed_layer_size[float](self.isa_i, self.spec, dims)
                out = _aligned_empty(size, np.float32)
                rf.w_ih = <const float*>cnp.PyArray_DATA(w_ih)
                rf.w_hh = <const float*>cnp.PyArray_DATA(w_hh)
                rf.b_ih = <const float*>_ptr_or_null(b_ih)
                rf.b_hh = <const float*>_ptr_or_null(b_hh)
                rf.w_hr = <const float*>_ptr_or_null(w_hr)
                with nogil:
                    pack_layer[float](self.isa_i, self.spec, dims, rf, <float*>cnp.PyArray_DATA(out))
                self.ptr_f.push_back(<const float*>cnp.PyArray_DATA(out))
            else:
                size = packed_layer_size[double](self.isa_i, self.spec, dims)
                out = _aligned_empty(size, np.float64)
                rd.w_ih = <const double*>cnp.PyArray_DATA(w_ih)
                rd.w_hh = <const double*>cnp.PyArray_DATA(w_hh)
                rd.b_ih = <const double*>_ptr_or_null(b_ih)
                rd.b_hh = <const double*>_ptr_or_null(b_hh)
                rd.w_hr = <const double*>_ptr_or_null(w_hr)
                with nogil:
                    pack_layer[double](self.isa_i, self.spec, dims, rd, <double*>cnp.PyArray_DATA(out))
                self.ptr_d.push_back(<const double*>cnp.PyArray_DATA(out))
            self.packed.append(out)

    @property
    def packed_bytes(self):
        return sum(a.nbytes for a in self.packed)

    cdef int64_t _step_ws_size(self, int64_t N):
        cdef LayerDims dims
        dims.I, dims.H, dims.P = self.I, self.H, self.P
        if self.typenum == cnp.NPY_FLOAT32:
            return step_workspace_size[float](self.isa_i, self.spec, dims, N)
        return step_workspace_size[double](self.isa_i, self.spec, dims, N)

    def call(self, x, h, c):
        """The common case of a module's cell call, checked in C: x [N, I], h [N, P] and (LSTM)
        c [N, H], all C-contiguous, aligned NumPy arrays of the kernel's dtype, or None for a
        zero state -> (h1, c1) new arrays (c1 None unless LSTM). Returns None for anything else
        (a cast, a 1-d x, a device array, a bad shape): the caller then takes the general path,
        which converts or reports. Same kernel call, so the same results, as that path."""
        return self._call(x, h, c)

    def call_cell(self, x, hx, out=None):
        """A cell module's call, checked and run in C where its arrays allow: hx as the module
        takes it ((h, c) or None for an LSTM, h or None otherwise) and out=None (new outputs)
        or the caller's buffers ((h1, c1) for an LSTM, else h1) -> what the module returns:
        (h1, c1) for an LSTM, else h1. None where call() would give None, where hx or out is
        not a plain pair / array of the shapes [N, P] and [N, H] (writable, C-contiguous,
        aligned, of the dtype), or where an output overlaps an input or the other output: the
        module's general path then converts, or reports the error. One call from the module's
        __call__ (CellCall) in place of its hx split, _step and the general path's out= checks
        (float_array on every input, np.shares_memory at ~0.4 us for every pair). Measured with
        CellCall, at I = H = 64, N = 1, one thread (bench/ab_builds.py lstmcall, lstmcallout):
        LSTMCell(x, (h, c)) 1.72 -> 1.11 us; with out=, 12.1 -> 1.02 us."""
        return self._call_cell(x, hx, out)

    cdef object _call_cell(self, object x, object hx, object out):
        cdef object h = hx, c = None, h1 = out, c1 = None
        cdef bint lstm = self.kind == LSTM
        if lstm:
            if hx is None:
                h = None
            elif type(hx) is tuple and len(<tuple>hx) == 2:
                h, c = (<tuple>hx)[0], (<tuple>hx)[1]
            else:
                return None
            if out is not None:
                if type(out) is not tuple or len(<tuple>out) != 2:
                    return None
                h1, c1 = (<tuple>out)[0], (<tuple>out)[1]
        r = self._call(x, h, c, h1, c1)
        if r is None:
            return None
        if out is not None:
            return out
        return r if lstm else (<tuple>r)[0]

    cdef object _call(self, object x, object h, object c, object h1=None, object c1=None):
        """call(), and call_cell()'s core: -> (h1, c1) written, new arrays where h1 is None, else
        the caller's h1 (and c1); None unless every array is what the kernel reads and writes
        as is and no output overlaps an input or the other output (all are C-contiguous:
        overlapping byte ranges are shared memory)."""
        cdef bint lstm = self.kind == LSTM
        cdef bint new = h1 is None
        if self.L != 1 or self.D != 1 or not _plain_nd(x, 2, self.typenum):
            return None
        cdef cnp.ndarray X = <cnp.ndarray>x, Hx, C = None, O, OC = None
        cdef int64_t N = cnp.PyArray_DIMS(X)[0]
        if N < 1 or cnp.PyArray_DIMS(X)[1] != self.I:
            return None
        cdef cnp.npy_intp dims[2]
        dims[0], dims[1] = N, self.P
        if not new and not _plain_out(h1, dims, self.typenum):
            return None
        Hx = self._cell_state(h, dims)
        if Hx is None:
            return None
        O = cnp.PyArray_EMPTY(2, dims, self.typenum, 0) if new else <cnp.ndarray>h1
        if lstm:
            dims[1] = self.H
            if not new and not _plain_out(c1, dims, self.typenum):
                return None
            C = self._cell_state(c, dims)
            if C is None:
                return None
            OC = cnp.PyArray_EMPTY(2, dims, self.typenum, 0) if new else <cnp.ndarray>c1
        if not new and (_overlap(O, X) or _overlap(O, Hx) or (lstm and (
                _overlap(OC, X) or _overlap(OC, Hx) or _overlap(OC, C) or _overlap(O, C) or
                _overlap(O, OC)))):
            return None
        self._run_step(N, X, Hx, C, O, OC)
        return O, OC

    cdef cnp.ndarray _cell_state(self, object a, cnp.npy_intp* dims):
        """call()'s state a as an array of dims [N, cols]: zeros for None, a itself if it is a
        plain array of those dims, else None (the general path)."""
        if a is None:
            return cnp.PyArray_ZEROS(2, dims, self.typenum, 0)
        if _plain_nd(a, 2, self.typenum) and cnp.PyArray_DIMS(<cnp.ndarray>a)[0] == dims[0] and \
                cnp.PyArray_DIMS(<cnp.ndarray>a)[1] == dims[1]:
            return <cnp.ndarray>a
        return None

    def step(self, cnp.ndarray x, cnp.ndarray h, cnp.ndarray c, cnp.ndarray h1, cnp.ndarray c1):
        """One time step of a single-layer, single-direction kernel.
        x [N, I], h [N, P], c [N, H] (LSTM; else None) -> h1 [N, P], c1 [N, H] (written)."""
        if self.L != 1 or self.D != 1:
            raise ValueError("step() needs a single-layer, single-direction kernel")
        if x is None or cnp.PyArray_NDIM(x) != 2:
            raise ValueError("x: kernel expects [N, I]")
        cdef int64_t N = cnp.PyArray_DIMS(x)[0]
        _check(x, "x", self.typenum, N, self.I)
        _check(h, "h", self.typenum, N, self.P)
        _check(h1, "h1", self.typenum, N, self.P, -2, True)
        if self.kind == LSTM:
            _check(c, "c", self.typenum, N, self.H)
            _check(c1, "c1", self.typenum, N, self.H, -2, True)
        self._run_step(N, x, h, c, h1, c1)

    cdef int _run_step(self, int64_t N, cnp.ndarray x, cnp.ndarray h, cnp.ndarray c,
                       cnp.ndarray h1, cnp.ndarray c1) except -1:
        """step() on arrays its caller has checked (single layer and direction, dtypes, shapes,
        C-contiguous, h1 and c1 writable)."""
        cdef bint lstm = self.kind == LSTM
        cdef bint shared
        cdef cnp.ndarray ws = self._take_ws(self._step_ws_size(N), &shared)
        cdef LayerDims dims
        dims.I, dims.H, dims.P = self.I, self.H, self.P
        cdef bint release = N * self.G * self.H * (self.I + self.P) >= GIL_RELEASE_WORK
        cdef const void* xp = cnp.PyArray_DATA(x)
        cdef const void* hp = cnp.PyArray_DATA(h)
        cdef const void* cp = cnp.PyArray_DATA(c) if lstm else NULL
        cdef void* h1p = cnp.PyArray_DATA(h1)
        cdef void* c1p = cnp.PyArray_DATA(c1) if lstm else NULL
        cdef void* wsp = cnp.PyArray_DATA(ws)
        # Alternate the order of the hidden blocks from call to call: a call then starts on the
        # weights the previous one read last (see step_forward); the results do not change.
        cdef bint backward = self.step_parity
        self.step_parity = not backward
        try:
            if self.typenum == cnp.NPY_FLOAT32:
                if release:
                    with nogil:
                        step_forward[float](self.isa_i, self.spec, dims, N, self.ptr_f[0], <float*>xp,
                                            <float*>hp, <const float*>cp, <float*>h1p,
                                            <float*>c1p, <float*>wsp, backward)
                else:
                    step_forward[float](self.isa_i, self.spec, dims, N, self.ptr_f[0], <float*>xp,
                                        <float*>hp, <const float*>cp, <float*>h1p, <float*>c1p,
                                        <float*>wsp, backward)
            else:
                if release:
                    with nogil:
                        step_forward[double](self.isa_i, self.spec, dims, N, self.ptr_d[0], <double*>xp,
                                             <double*>hp, <const double*>cp, <double*>h1p,
                                             <double*>c1p, <double*>wsp, backward)
                else:
                    step_forward[double](self.isa_i, self.spec, dims, N, self.ptr_d[0], <double*>xp,
                                         <double*>hp, <const double*>cp, <double*>h1p,
                                         <double*>c1p, <double*>wsp, backward)
        finally:
            self._give_ws(shared)
        return 0

    cdef cnp.ndarray _take_ws(self, int64_t need, bint* shared):
        """A workspace of `need` elements: the kernel's own (kept between calls, up to
        WS_KEEP_BYTES) unless another call holds it, else a new one. *shared tells the caller to
        hand it back (_give_ws). Taken and given back with the GIL held."""
        cdef cnp.ndarray ws
        shared[0] = False
        if self.ws_busy:
            return _aligned_empty(need, self.dtype)
        if self.ws is not None and cnp.PyArray_DIMS(self.ws)[0] >= need:
            ws = self.ws
        else:
            ws = _aligned_empty(need, self.dtype)
            if need * cnp.PyArray_ITEMSIZE(ws) > WS_KEEP_BYTES:
                return ws
            self.ws = ws
        self.ws_busy = True
        shared[0] = True
        return ws

    cdef inline void _give_ws(self, bint shared):
        if shared:
            self.ws_busy = False

    cdef int _sequence(self, int64_t T, int64_t N, bint batch_first, const void* xp,
                       const int64_t* lp, const void* h0p, const void* c0p, void* yp, void* hnp,
                       void* cnp_) except -1:
        """Runs a sequence on checked pointers (forward and run check them)."""
        cdef SeqShape s
        s.T, s.N, s.I, s.H, s.P, s.L, s.D = T, N, self.I, self.H, self.P, self.L, self.D
        s.batch_first = batch_first
        cdef int64_t need
        if self.typenum == cnp.NPY_FLOAT32:
            need = sequence_workspace_size[float](self.isa_i, self.spec, s)
        else:
            need = sequence_workspace_size[double](self.isa_i, self.spec, s)
        cdef bint shared
        cdef cnp.ndarray ws = self._take_ws(need, &shared)
        cdef void* wsp = cnp.PyArray_DATA(ws)
        cdef bint release = T * N * self.L * self.D * self.G * self.H * (self.I + self.P) \
            >= GIL_RELEASE_WORK
        try:
            if release:
                with nogil:
                    self._sequence_call(&s, xp, lp, h0p, c0p, yp, hnp, cnp_, wsp)
            else:
                self._sequence_call(&s, xp, lp, h0p, c0p, yp, hnp, cnp_, wsp)
        finally:
            self._give_ws(shared)
        return 0

    cdef void _sequence_call(self, const SeqShape* s, const void* xp, const int64_t* lp,
                             const void* h0p, const void* c0p, void* yp, void* hnp, void* cnp_,
                             void* wsp) noexcept nogil:
        if self.typenum == cnp.NPY_FLOAT32:
            sequence_forward[float](self.isa_i, self.spec, s[0], self.ptr_f.data(),
                                    <const float*>xp, lp, <const float*>h0p, <const float*>c0p,
                                    <float*>yp, <float*>hnp, <float*>cnp_, <float*>wsp)
        else:
            sequence_forward[double](self.isa_i, self.spec, s[0], self.ptr_d.data(),
                                     <const double*>xp, lp, <const double*>h0p,
                                     <const double*>c0p, <double*>yp, <double*>hnp,
                                     <double*>cnp_, <double*>wsp)

    def sequence_threads(self, int64_t T, int64_t N):
        """(threads, by_rows): how a sequence call of T steps and N rows would share its work at
        the current thread count (gatedkernels.h, sequence_threads). For tests and benchmarks."""
        if T < 1 or N < 1:
            raise ValueError(f"T and N: expected >= 1, got {T} and {N}")
        cdef SeqShape s
        s.T, s.N, s.I, s.H, s.P, s.L, s.D = T, N, self.I, self.H, self.P, self.L, self.D
        s.batch_first = False
        cdef cbool by_rows = False
        cdef int n
        if self.typenum == cnp.NPY_FLOAT32:
            n = sequence_threads[float](self.isa_i, self.spec, s, &by_rows)
        else:
            n = sequence_threads[double](self.isa_i, self.spec, s, &by_rows)
        return n, bool(by_rows)

    def run(self, x, hx, lengths, bint batch_first):
        """The common case of a module's sequence call, checked in C: x [T, N, I] ([N, T, I] if
        batch_first) or unbatched [T, I]; hx None, or h0 [L*D, N, P] (unbatched [L*D, P]), for an
        LSTM a tuple (h0, c0) of such arrays (c0 with H columns); lengths None or int64 [N] in
        [1, T]; all C-contiguous, aligned NumPy arrays of the kernel's dtype -> (y, hn, cn), new
        arrays in the caller's shape (cn None unless LSTM). Returns None for anything else (a
        cast, a list, a missing half of an LSTM state, a device array, a bad shape or length):
        the caller then takes the general path, which converts or reports. Same kernel call, so
        the same results, as that path."""
        return self._run(x, hx, lengths, batch_first)

    cdef object _run(self, object x, object hx, object lengths, bint batch_first):
        if type(x) is not cnp.ndarray:
            return None
        cdef int nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
        if (nd != 2 and nd != 3) or not _plain_nd(x, nd, self.typenum):
            return None
        cdef cnp.npy_intp* xd = cnp.PyArray_DIMS(<cnp.ndarray>x)
        cdef bint unbatched = nd == 2
        cdef bint bf = batch_first and not unbatched
        cdef int64_t T = xd[1] if bf else xd[0]
        cdef int64_t N = 1 if unbatched else (xd[0] if bf else xd[1])
        cdef bint lstm = self.kind == LSTM
        cdef int64_t LD = self.L * self.D, n
        if T < 1 or N < 1 or xd[nd - 1] != self.I:
            return None
        h0 = c0 = None
        if hx is not None:
            if not lstm:
                h0 = hx
            elif type(hx) is tuple and len(<tuple>hx) == 2:
                h0, c0 = hx
                if h0 is None or c0 is None:
                    return None
            else:
                return None
        if h0 is not None and not self._state_ok(h0, unbatched, LD, N, self.P):
            return None
        if c0 is not None and not self._state_ok(c0, unbatched, LD, N, self.H):
            return None
        cdef const int64_t* lp = NULL
        if lengths is not None:
            if type(lengths) is not cnp.ndarray or \
                    not _plain_nd(lengths, 1, cnp.NPY_INT64) or \
                    cnp.PyArray_DIMS(<cnp.ndarray>lengths)[0] != N:
                return None
            lp = <const int64_t*>cnp.PyArray_DATA(<cnp.ndarray>lengths)
            for n in range(N):
                if lp[n] < 1 or lp[n] > T:
                    return None
        cdef cnp.npy_intp dims[3]
        if unbatched:
            dims[0], dims[1] = T, self.D * self.P
        else:
            dims[0], dims[1], dims[2] = (N, T, self.D * self.P) if bf else (T, N, self.D * self.P)
        cdef cnp.ndarray y = cnp.PyArray_EMPTY(2 if unbatched else 3, dims, self.typenum, 0)
        dims[0], dims[1], dims[2] = LD, N, self.P
        if unbatched:
            dims[1] = self.P
        cdef cnp.ndarray hn = cnp.PyArray_EMPTY(nd, dims, self.typenum, 0)
        cdef cnp.ndarray cn = None
        if lstm:
            dims[nd - 1] = self.H
            cn = cnp.PyArray_EMPTY(nd, dims, self.typenum, 0)
        self._sequence(T, N, bf, cnp.PyArray_DATA(<cnp.ndarray>x), lp,
                       NULL if h0 is None else cnp.PyArray_DATA(<cnp.ndarray>h0),
                       NULL if c0 is None else cnp.PyArray_DATA(<cnp.ndarray>c0),
                       cnp.PyArray_DATA(y), cnp.PyArray_DATA(hn),
                       cnp.PyArray_DATA(cn) if lstm else NULL)
        return y, hn, cn

    cdef bint _state_ok(self, object a, bint unbatched, int64_t LD, int64_t N, int64_t cols):
        """a is a plain array [LD, N, cols] ([LD, cols] for an unbatched call)."""
        cdef int nd = 2 if unbatched else 3
        if not _plain_nd(a, nd, self.typenum):
            return False
        cdef cnp.npy_intp* d = cnp.PyArray_DIMS(<cnp.ndarray>a)
        if unbatched:
            return d[0] == LD and d[1] == cols
        return d[0] == LD and d[1] == N and d[2] == cols

    def forward(self, cnp.ndarray x, cnp.ndarray lengths, cnp.ndarray h0, cnp.ndarray c0,
                cnp.ndarray y, cnp.ndarray hn, cnp.ndarray cn, bint batch_first):
        """A whole sequence. x [T, N, I] ([N, T, I] if batch_first); lengths int64 [N] or None;
        h0 [L*D, N, P] or None; c0 [L*D, N, H] or None (LSTM) -> y [T, N, D*P], hn, cn."""
        if x is None or cnp.PyArray_NDIM(x) != 3:
            raise ValueError("x: kernel expects a 3-d array")
        cdef int64_t T = cnp.PyArray_DIMS(x)[1 if batch_first else 0]
        cdef int64_t N = cnp.PyArray_DIMS(x)[0 if batch_first else 1]
        cdef int64_t LD = self.L * self.D
        cdef bint lstm = self.kind == LSTM
        cdef int64_t n
        if T < 1 or N < 1:
            raise ValueError("x: T and N must be at least 1")
        if batch_first:
            _check(x, "x", self.typenum, N, T, self.I)
            _check(y, "y", self.typenum, N, T, self.D * self.P, writable=True)
        else:
            _check(x, "x", self.typenum, T, N, self.I)
            _check(y, "y", self.typenum, T, N, self.D * self.P, writable=True)
        _check(hn, "hn", self.typenum, LD, N, self.P, writable=True)
        if h0 is not None:
            _check(h0, "h0", self.typenum, LD, N, self.P)
        if lstm:
            _check(cn, "cn", self.typenum, LD, N, self.H, writable=True)
            if c0 is not None:
                _check(c0, "c0", self.typenum, LD, N, self.H)
        cdef const int64_t* lp = NULL
        if lengths is not None:
            if cnp.PyArray_TYPE(lengths) != cnp.NPY_INT64 or not cnp.PyArray_IS_C_CONTIGUOUS(lengths) \
                    or not cnp.PyArray_ISNOTSWAPPED(lengths) or cnp.PyArray_NDIM(lengths) != 1 \
                    or cnp.PyArray_DIMS(lengths)[0] != N:
                raise ValueError(f"lengths: kernel expects a contiguous native int64 array [N] = "
                                 f"[{N}]")
            lp = <const int64_t*>cnp.PyArray_DATA(lengths)
            for n in range(N):
                if lp[n] < 1 or lp[n] > T:
                    raise ValueError(f"lengths: every entry must be in [1, T] = [1, {T}]")
        self._sequence(T, N, batch_first, cnp.PyArray_DATA(x), lp, _ptr_or_null(h0),
                       _ptr_or_null(c0) if lstm else NULL, cnp.PyArray_DATA(y),
                       cnp.PyArray_DATA(hn), cnp.PyArray_DATA(cn) if lstm else NULL)

@cython.auto_pickle(False)  # the modules pickle their parameters (_Module.__getstate__)
cdef class CellCall:
    """Base of the cell modules (LSTMCell, GRUCell, RNNCell): their __call__, in C.

    ``cell(x, hx=None, *, out=None)`` hands plain NumPy arrays straight to the kernel
    (Kernel.call_cell) and everything else to the module's Python path, ``self._call(x, hx,
    out)``: casts, unbatched input, device arrays, the reference backend and every error. A
    __call__ written in Python cost ~0.27 us of a 1.33 us LSTMCell call (I = H = 64): CPython
    calls it through a generic slot that builds an argument tuple and a keyword dict.
    """
    cdef public object _kernel  # the module's Kernel, or None (reference backend)

    def __call__(self, x, hx=None, *, out=None):
        """One step: ``h1, c1 = cell(x, (h, c))`` (LSTM) or ``h1 = cell(x, h)``; x [N, I] or
        [I], a state of None is zeros. ``out=``: caller-owned buffers written in place, (h1, c1)
        for an LSTM, else h1."""
        cdef object k = self._kernel
        cdef object r
        if k is not None:
            r = (<Kernel>k)._call_cell(x, hx, out)
            if r is not None:
                return r
        return self._call(x, hx, out)


@cython.auto_pickle(False)  # the modules pickle their parameters (_Module.__getstate__)
cdef class SeqCall:
    """Base of the sequence modules (LSTM, GRU, RNN): their __call__, in C, as CellCall is the
    cells'. Plain NumPy arrays go straight to the kernel (Kernel.run); everything else to the
    module's Python path, ``self._forward(x, hx, lengths)`` -> (y, hn, cn)."""
    cdef public object _kernel  # the module's Kernel, or None (reference backend)

    def __call__(self, x, hx=None, *, lengths=None):
        """``output, (h_n, c_n) = lstm(x, (h0, c0))``, ``output, h_n = gru(x, h0)`` (and rnn);
        x [T, N, I] ([N, T, I] with batch_first) or [T, I]; lengths: valid steps per row."""
        cdef object k = self._kernel
        cdef object r = None
        cdef bint lstm
        if k is not None:
            r = (<Kernel>k)._run(x, hx, lengths, self.batch_first)
            lstm = (<Kernel>k).kind == LSTM
        else:
            lstm = self._kind == LSTM
        if r is None:
            r = self._forward(x, hx, lengths)
        cdef tuple t = <tuple?>r
        if lstm:
            return t[0], (t[1], t[2])
        return t[0], t[1]


def raw_call(int kind, bint linear_before_reset, bint relu, x, h, c, w_ih, w_hh, b_ih, b_hh,
             str isa, tuple pack_rows, out=None):
    """The common case of a functional cell call, checked in C: x [N, I] with fewer rows than
    the API packs weights for (pack_rows = (K_SMALL, ROWS_SMALL, ROWS): from ROWS_SMALL rows if
    I + H < K_SMALL, else from ROWS; see _api.PACK_PER_CALL), h
    [N, H], c [N, H] (LSTM), w_ih [G*H, I], w_hh [G*H, H], b_ih/b_hh [G*H] or None, all
    C-contiguous, aligned NumPy arrays of x's dtype -> (h1, c1) new arrays (c1 None unless LSTM),
    or with out ((h1, c1) for an LSTM, else h1: writable [N, H] arrays of the same kind, sharing
    no memory with an input or each other) those arrays, written. Returns None for anything
    else (casts, a 1-d x, a missing state, a projection, device arrays, bad shapes, an
    overlapping out): the caller then takes the general path, which converts or reports."""
    if type(x) is not cnp.ndarray:
        return None
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return None
    cdef bint lstm = kind == LSTM
    if not (_plain_nd(x, 2, typenum) and _plain_nd(h, 2, typenum) and _plain_nd(w_ih, 2, typenum)
            and _plain_nd(w_hh, 2, typenum) and (not lstm or _plain_nd(c, 2, typenum))
            and (b_ih is None or _plain_nd(b_ih, 1, typenum))
            and (b_hh is None or _plain_nd(b_hh, 1, typenum))):
        return None
    cdef int G = gate_count(kind)
    cdef cnp.npy_intp* xd = cnp.PyArray_DIMS(<cnp.ndarray>x)
    cdef cnp.npy_intp* wd = cnp.PyArray_DIMS(<cnp.ndarray>w_hh)
    cdef int64_t N = xd[0], I = xd[1], GH = wd[0], H = wd[0] // G
    if N < 1 or I < 1 or H < 1 or GH != G * H or wd[1] != H:
        return None
    if N >= (<int64_t>pack_rows[1] if I + H < <int64_t>pack_rows[0] else <int64_t>pack_rows[2]):
        return None
    cdef cnp.npy_intp* d = cnp.PyArray_DIMS(<cnp.ndarray>w_ih)
    if d[0] != GH or d[1] != I:
        return None
    d = cnp.PyArray_DIMS(<cnp.ndarray>h)
    if d[0] != N or d[1] != H:
        return None
    if lstm:
        d = cnp.PyArray_DIMS(<cnp.ndarray>c)
        if d[0] != N or d[1] != H:
            return None
    if (b_ih is not None and cnp.PyArray_DIMS(<cnp.ndarray>b_ih)[0] != GH) or \
            (b_hh is not None and cnp.PyArray_DIMS(<cnp.ndarray>b_hh)[0] != GH):
        return None
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = N, H
    cdef cnp.ndarray h1, c1 = None
    cdef object o0 = out, o1 = None
    if out is None:
        h1 = cnp.PyArray_EMPTY(2, dims, typenum, 0)
        c1 = cnp.PyArray_EMPTY(2, dims, typenum, 0) if lstm else None
    else:
        if lstm:
            if type(out) is not tuple or len(<tuple>out) != 2:
                return None
            o0, o1 = (<tuple>out)[0], (<tuple>out)[1]
            if not _plain_out(o1, dims, typenum):
                return None
            c1 = <cnp.ndarray>o1
        if not _plain_out(o0, dims, typenum):
            return None
        h1 = <cnp.ndarray>o0
        for a in (x, h, c if lstm else None, w_ih, w_hh, b_ih, b_hh, c1):
            if a is not None and (_overlap(h1, <cnp.ndarray>a) or
                                  (c1 is not None and a is not c1 and
                                   _overlap(c1, <cnp.ndarray>a))):
                return None
    raw_step(kind, linear_before_reset, relu, x, h, c if lstm else None, w_ih, w_hh, b_ih, b_hh,
             None, h1, c1, isa)
    return (h1, c1) if out is None else (o0, o1)


def raw_step(int kind, bint linear_before_reset, bint relu, cnp.ndarray x, cnp.ndarray h,
             cnp.ndarray c, cnp.ndarray w_ih, cnp.ndarray w_hh, cnp.ndarray b_ih,
             cnp.ndarray b_hh, cnp.ndarray w_hr, cnp.ndarray h1, cnp.ndarray c1, str isa):
    """One step on raw PyTorch-layout weights (functional calls: nothing is packed).
    x [N, I], h [N, P], c [N, H] (LSTM) -> h1 [N, P], c1 [N, H]; sizes read from w_hh / w_hr."""
    cdef CellSpec spec = _spec(kind, linear_before_reset, relu)
    cdef int isa_i = _isa_index(isa)
    if x is None or cnp.PyArray_NDIM(x) != 2 or w_hh is None or cnp.PyArray_NDIM(w_hh) != 2:
        raise ValueError("x and w_hh: kernel expects 2-d arrays")
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"x: kernel expects float32 or float64, got {x.dtype}")
    cdef int G = gate_count(kind)
    cdef int64_t N = cnp.PyArray_DIMS(x)[0], I = cnp.PyArray_DIMS(x)[1]
    cdef int64_t P = cnp.PyArray_DIMS(w_hh)[1]
    cdef int64_t H = cnp.PyArray_DIMS(w_hh)[0] // G
    cdef bint lstm = kind == LSTM
    if H < 1 or N < 1 or I < 1:
        raise ValueError("kernel expects N, I, H >= 1")
    _check(x, "x", typenum, N, I)
    _check(w_ih, "w_ih", typenum, G * H, I)
    _check(w_hh, "w_hh", typenum, G * H, P)
    if b_ih is not None:
        _check(b_ih, "b_ih", typenum, G * H)
    if b_hh is not None:
        _check(b_hh, "b_hh", typenum, G * H)
    if w_hr is not None:
        if not lstm:
            raise ValueError("w_hr: only an LSTM has a projection")
        _check(w_hr, "w_hr", typenum, P, H)
    elif P != H:
        raise ValueError(f"w_hh: kernel expects [G*H, H] without w_hr, got {(<object>w_hh).shape}")
    _check(h, "h", typenum, N, P)
    _check(h1, "h1", typenum, N, P, -2, True)
    if lstm:
        _check(c, "c", typenum, N, H)
        _check(c1, "c1", typenum, N, H, -2, True)
    cdef LayerDims dims
    dims.I, dims.H, dims.P = I, H, P
    cdef int64_t need = (raw_step_workspace_size[float](isa_i, spec, dims, N) if typenum == cnp.NPY_FLOAT32
                         else raw_step_workspace_size[double](isa_i, spec, dims, N))
    cdef cnp.ndarray ws = None
    if need > 0:
        ws = _aligned_empty(need, x.dtype)
    cdef RawWeights[float] rf
    cdef RawWeights[double] rd
    cdef const void* xp = cnp.PyArray_DATA(x)
    cdef const void* hp = cnp.PyArray_DATA(h)
    cdef const void* cp = cnp.PyArray_DATA(c) if lstm else NULL
    cdef void* h1p = cnp.PyArray_DATA(h1)
    cdef void* c1p = cnp.PyArray_DATA(c1) if lstm else NULL
    cdef void* wsp = NULL if ws is None else cnp.PyArray_DATA(ws)
    cdef bint release = N * G * H * (I + P) >= GIL_RELEASE_WORK
    if typenum == cnp.NPY_FLOAT32:
        rf.w_ih = <const float*>cnp.PyArray_DATA(w_ih)
        rf.w_hh = <const float*>cnp.PyArray_DATA(w_hh)
        rf.b_ih = <const float*>_ptr_or_null(b_ih)
        rf.b_hh = <const float*>_ptr_or_null(b_hh)
        rf.w_hr = <const float*>_ptr_or_null(w_hr)
        if release:
            with nogil:
                raw_step_forward[float](isa_i, spec, dims, N, rf, <float*>xp, <float*>hp,
                                        <const float*>cp, <float*>h1p, <float*>c1p, <float*>wsp)
        else:
            raw_step_forward[float](isa_i, spec, dims, N, rf, <float*>xp, <float*>hp, <const float*>cp,
                                    <float*>h1p, <float*>c1p, <float*>wsp)
    else:
        rd.w_ih = <const double*>cnp.PyArray_DATA(w_ih)
        rd.w_hh = <const double*>cnp.PyArray_DATA(w_hh)
        rd.b_ih = <const double*>_ptr_or_null(b_ih)
        rd.b_hh = <const double*>_ptr_or_null(b_hh)
        rd.w_hr = <const double*>_ptr_or_null(w_hr)
        if release:
            with nogil:
                raw_step_forward[double](isa_i, spec, dims, N, rd, <double*>xp, <double*>hp,
                                         <const double*>cp, <double*>h1p, <double*>c1p,
                                         <double*>wsp)
        else:
            raw_step_forward[double](isa_i, spec, dims, N, rd, <double*>xp, <double*>hp,
                                     <const double*>cp, <double*>h1p, <double*>c1p, <double*>wsp)


def activation(str name, cnp.ndarray x, str isa):
    """The kernels' own sigmoid or tanh (build `isa`) applied to a float32/float64 array."""
    cdef int isa_i = _isa_index(isa)
    cdef int which
    if name == "sigmoid":
        which = 0
    elif name == "tanh":
        which = 1
    else:
        raise ValueError(f"activation: expected 'sigmoid' or 'tanh', got {name!r}")
    x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))  # native order: read as is
    cdef int typenum = cnp.PyArray_TYPE(x)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"x: expected float32 or float64, got {x.dtype}")
    cdef cnp.ndarray y = np.empty_like(x)
    cdef int64_t n = x.size
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            activation_forward[float](isa_i, which, <const float*>xp, n, <float*>yp)
        else:
            activation_forward[double](isa_i, which, <const double*>xp, n, <double*>yp)
    return y


cdef inline void _stream_step(bint f32, int isa, const CellSpec& spec, const LayerDims& dims,
                              int64_t N, const float* pf, const double* pd, const void* x,
                              void* h, void* c, void* h1, void* c1, void* ws,
                              bint backward) noexcept nogil:
    if f32:
        step_forward[float](isa, spec, dims, N, pf, <const float*>x, <const float*>h,
                            <const float*>c, <float*>h1, <float*>c1, <float*>ws, backward)
    else:
        step_forward[double](isa, spec, dims, N, pd, <const double*>x, <const double*>h,
                             <const double*>c, <double*>h1, <double*>c1, <double*>ws, backward)


cdef class Stream:
    """Streaming steps of a single-direction Kernel, holding the state itself.

    ``step(x, out)`` advances the state by one time step and copies the new hidden state (of the
    last layer) into ``out`` (a caller-owned [N, P] array, or [P] when N == 1): with ``out``
    given, a step allocates nothing. With ``out=None`` it returns a new array. The state lives
    in two internal buffers used alternately, so the kernel never reads and writes the same
    memory. A cell's stream (one layer) runs the fused step; a layered stream (a sequence
    module's, any number of layers) runs the sequence kernel one time step at a time, and its
    state is [L, N, P] (and [L, N, H]) as the module's h_n (and c_n).
    """
    cdef readonly Kernel kernel
    cdef readonly int64_t N
    cdef readonly bint layered
    cdef cnp.ndarray hbuf, cbuf, ws   # hbuf [2, L, N, P], cbuf [2, L, N, H] (LSTM), ws workspace
    cdef cnp.ndarray ybuf             # a layered stream's last-layer output [N, P]
    cdef int cur
    cdef bint lstm
    cdef bint busy                    # a step runs (without the GIL, in some thread)
    cdef LayerDims dims

    def __init__(self, Kernel kernel, int64_t N, bint layered=False):
        if kernel.D != 1:
            raise ValueError("a stream needs a single-direction kernel (a bidirectional layer "
                             "reads the whole sequence)")
        if kernel.L != 1 and not layered:
            raise ValueError("a cell stream needs a single-layer kernel")
        if N < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {N}")
        self.kernel, self.N, self.layered = kernel, N, layered
        self.lstm = kernel.kind == LSTM
        self.dims.I, self.dims.H, self.dims.P = kernel.I, kernel.H, kernel.P
        cdef int64_t L = kernel.L, HC = kernel.H if self.lstm else 1
        self.hbuf = _aligned_empty(2 * L * N * kernel.P, kernel.dtype).reshape(2, L, N, kernel.P)
        self.cbuf = _aligned_empty(2 * L * N * HC, kernel.dtype).reshape(2, L, N, HC)
        self.hbuf[...] = 0
        self.cbuf[...] = 0
        if layered:
            self.ybuf = _aligned_empty(N * kernel.P, kernel.dtype)
            self.ws = None  # the kernel's own (Kernel._sequence)
        else:
            self.ws = _aligned_empty(kernel._step_ws_size(N), kernel.dtype)
        self.cur = 0

    def reset(self, h=None, c=None):
        """Set the state (zeros where None): h [N, P] (or [P] when N == 1), c [N, H] (LSTM); a
        layered stream's [L, N, P] (or [L, P] when N == 1) and [L, N, H]."""
        self._not_busy("reset")
        cdef int64_t L = self.kernel.L
        self.cur = 0
        self.hbuf[0] = 0 if h is None else np.asarray(h).reshape(L, self.N, self.kernel.P)
        if self.lstm:
            self.cbuf[0] = 0 if c is None else np.asarray(c).reshape(L, self.N, self.kernel.H)
        elif c is not None:
            raise ValueError("c: only an LSTM stream has a cell state")

    @property
    def h(self):
        """A copy of the hidden state: [N, P], a layered stream's [L, N, P]."""
        return self.hbuf[self.cur].copy() if self.layered else self.hbuf[self.cur, 0].copy()

    @property
    def c(self):
        """A copy of the cell state [N, H] (layered: [L, N, H]) of an LSTM, else None."""
        if not self.lstm:
            return None
        return self.cbuf[self.cur].copy() if self.layered else self.cbuf[self.cur, 0].copy()

    def step(self, cnp.ndarray x, cnp.ndarray out=None):
        """One time step; x [N, I] (or [I] when N == 1) of the kernel's dtype -> out."""
        cdef Kernel k = self.kernel
        cdef int nd = cnp.PyArray_NDIM(x) if x is not None else -1
        cdef cnp.npy_intp* xd
        cdef bint fast = False
        if x is not None and cnp.PyArray_TYPE(x) == k.typenum and cnp.PyArray_IS_C_CONTIGUOUS(x) \
                and cnp.PyArray_ISNOTSWAPPED(x):
            xd = cnp.PyArray_DIMS(x)
            fast = (nd == 2 and xd[0] == self.N and xd[1] == k.I) or \
                   (nd == 1 and self.N == 1 and xd[0] == k.I)
        if not fast:
            x = self._slow_input(x)
        cdef int nxt = 1 - self.cur
        cdef int64_t NP = self.N * k.P, NH = self.N * k.H, LNP = k.L * NP, LNH = k.L * NH
        # out is checked before the step: a refused call leaves the state as it was.
        if out is None:
            out = np.empty(((<object>self.N, <object>k.P) if nd != 1 else (<object>k.P,)), dtype=k.dtype)
        elif not (cnp.PyArray_TYPE(out) == k.typenum and cnp.PyArray_IS_C_CONTIGUOUS(out)
                  and cnp.PyArray_ISNOTSWAPPED(out) and cnp.PyArray_ISWRITEABLE(out)
                  and cnp.PyArray_SIZE(out) == NP):
            raise ValueError(f"out: expected a writable C-contiguous native {k.dtype} array of "
                             f"[N, P] = [{self.N}, {k.P}] elements, got {out.dtype} "
                             f"{(<object>out).shape}")
        cdef char* hb = <char*>cnp.PyArray_DATA(self.hbuf)
        cdef char* cb = <char*>cnp.PyArray_DATA(self.cbuf)
        cdef void* xp = cnp.PyArray_DATA(x)
        cdef int64_t esz = cnp.PyArray_ITEMSIZE(self.hbuf)
        cdef void* h0 = hb + self.cur * LNP * esz
        cdef void* h1 = hb + nxt * LNP * esz
        cdef void* c0 = (cb + self.cur * LNH * esz) if self.lstm else NULL
        cdef void* c1 = (cb + nxt * LNH * esz) if self.lstm else NULL
        if self.layered:  # every layer, one time step: the sequence kernel (it releases the GIL)
            self._not_busy("step")
            self.busy = True
            try:
                k._sequence(1, self.N, False, xp, NULL, h0, c0, cnp.PyArray_DATA(self.ybuf),
                            h1, c1)
            finally:
                self.busy = False
            self.cur = nxt
            memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(self.ybuf), NP * esz)
            return out
        cdef void* wsp = cnp.PyArray_DATA(self.ws)
        # Without the GIL where the work pays for it (as Kernel.step). The state and workspace
        # are this stream's own: a second thread stepping it meanwhile is refused, not raced.
        cdef bint release = self.N * k.G * k.H * (k.I + k.P) >= GIL_RELEASE_WORK
        cdef bint f32 = k.typenum == cnp.NPY_FLOAT32
        cdef const float* pf = NULL
        cdef const double* pd = NULL
        if f32:
            pf = k.ptr_f[0]
        else:
            pd = k.ptr_d[0]
        self._not_busy("step")
        if release:
            self.busy = True
            with nogil:
                _stream_step(f32, k.isa_i, k.spec, self.dims, self.N, pf, pd, xp, h0, c0, h1,
                             c1, wsp, nxt == 1)
            self.busy = False
        else:
            _stream_step(f32, k.isa_i, k.spec, self.dims, self.N, pf, pd, xp, h0, c0, h1, c1,
                         wsp, nxt == 1)
        self.cur = nxt
        memcpy(cnp.PyArray_DATA(out), h1, NP * esz)
        return out

    cdef int _not_busy(self, str what) except -1:
        if self.busy:
            raise RuntimeError(f"{what}: this stream is stepping in another thread (a stream is "
                               f"one sequence: step it from one thread at a time)")
        return 0

    cdef cnp.ndarray _slow_input(self, object x):
        """Cast / copy / check an input that is not already a contiguous [N, I] array."""
        from gatedkernels._api import float_array
        a = float_array(x, "x", self.kernel.dtype)
        shape = a.shape
        if not (shape == (self.N, self.kernel.I) or (self.N == 1 and shape == (self.kernel.I,))):
            raise ValueError(f"x: expected [N, I] = [{self.N}, {self.kernel.I}], got {shape}")
        return a
