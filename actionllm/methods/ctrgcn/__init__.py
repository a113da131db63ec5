"""CTR-GCN (Chen et al., ICCV 2021): channel-wise topology refinement graph convolution. See README.md."""
