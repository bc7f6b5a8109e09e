//! clb-mkinitrd (being written)
