"""gatedkernels: fused, compiled LSTM, GRU and Elman RNN cells for NumPy.

Drop-in for ``torch.nn``'s recurrent layers and cells (same arguments, parameter names and
outputs), computed by C++ kernels that fuse the recurrent product with the gate nonlinearities.

    import gatedkernels as gk
    lstm = gk.LSTM(64, 128, num_layers=2, bidirectional=True)      # or gk.LSTM.from_torch(m)
    output, (h_n, c_n) = lstm(x)                                     # x: [T, N, 64] ndarray
    h1, c1 = gk.lstm_cell(x_t, (h, c), w_ih, w_hh, b_ih, b_hh)       # one step, raw weights

``gatedkernels.reference`` is the plain-NumPy oracle with the same calls.
"""
from gatedkernels import reference
from gatedkernels._api import gru, gru_cell, lstm, lstm_cell, rnn, rnn_cell
from gatedkernels._config import (get_isa, get_num_threads, set_isa, set_num_threads,
                                  show_config, use_isa)
from gatedkernels._modules import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"

__all__ = [
    "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell",
    "lstm_cell", "gru_cell", "rnn_cell", "lstm", "gru", "rnn",
    "reference", "show_config", "get_isa", "set_isa", "use_isa", "get_num_threads", "set_num_threads", "__version__",
]
