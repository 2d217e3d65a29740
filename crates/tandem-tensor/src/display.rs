//! PyTorch-style printing.
