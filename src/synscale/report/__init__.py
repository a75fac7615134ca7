"""The study report: figures (matplotlib) and a static HTML page built from the results tables alone."""
