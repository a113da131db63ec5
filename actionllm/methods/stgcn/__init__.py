"""ST-GCN (Yan et al. 2018), the yardstick, as PYSKL trains it. See README.md."""
