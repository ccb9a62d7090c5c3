"""One module per ``yoloslim`` command: argument parsing only; the work lives in the domain packages."""
