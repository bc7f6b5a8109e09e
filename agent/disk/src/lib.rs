//! clb-disk (being written)
