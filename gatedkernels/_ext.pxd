# Mirrors csrc/gatedkernels/gatedkernels.h one to one (see that header for the contracts).
from libc.stdint cimport int64_t
from libcpp cimport bool as cbool

cdef extern from "gatedkernels/gatedkernels.h" namespace "gatedkernels" nogil:
    cdef enum CellKind:
        kLSTM
        kGRU
        kRNN

    cdef cppclass CellSpec:
        int kind
        cbool linear_before_reset
        cbool relu

    cdef cppclass LayerDims:
        int64_t I, H, P

    cdef cppclass SeqShape:
        int64_t T, N, I, H, P, L, D
        cbool batch_first

    cdef cppclass RawWeights[T]:
        const T* w_ih
        const T* w_hh
        const T* b_ih
        const T* b_hh
        const T* w_hr

    int gate_count(int kind)
    int isa_count()
    const char* isa_name(int isa)
    cbool isa_supported(int isa)
    int isa_best()
    int64_t block_width[T](int isa)
    int64_t packed_layer_size[T](int isa, const CellSpec& spec, const LayerDims& dims)
    void pack_layer[T](int isa, const CellSpec& spec, const LayerDims& dims, const RawWeights[T]& raw,
                       T* out)
    int64_t step_workspace_size[T](int isa, const CellSpec& spec, const LayerDims& dims, int64_t N)
    void step_forward[T](int isa, const CellSpec& spec, const LayerDims& dims, int64_t N, const T* packed,
                         const T* x, const T* h, const T* c, T* h1, T* c1, T* ws, bint backward)
    int64_t raw_step_workspace_size[T](int isa, const CellSpec& spec, const LayerDims& dims, int64_t N)
    void raw_step_forward[T](int isa, const CellSpec& spec, const LayerDims& dims, int64_t N,
                             const RawWeights[T]& raw, const T* x, const T* h, const T* c,
                             T* h1, T* c1, T* ws)
    int64_t sequence_workspace_size[T](int isa, const CellSpec& spec, const SeqShape& shape)
    void sequence_forward[T](int isa, const CellSpec& spec, const SeqShape& shape, const T* const* packed,
                             const T* x, const int64_t* lengths, const T* h0, const T* c0,
                             T* y, T* hn, T* cn, T* ws)
    int sequence_threads[T](int isa, const CellSpec& spec, const SeqShape& shape, cbool* by_rows)
    void activation_forward[T](int isa, int which, const T* x, int64_t n, T* y)

cdef extern from "gatedkernels/threads.h" namespace "gatedkernels" nogil:
    int c_get_num_threads "gatedkernels::get_num_threads"()
    void c_set_num_threads "gatedkernels::set_num_threads"(int n)
