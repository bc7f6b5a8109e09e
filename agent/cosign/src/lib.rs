//! clb-cosign (being written)
