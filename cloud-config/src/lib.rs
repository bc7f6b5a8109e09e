//! clb-cloud-config (being written)
