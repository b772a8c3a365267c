"""Library pipelines: runs that read data and write a run directory; commands/ and experiments/ call them."""
