//! clb-convert (being written)
