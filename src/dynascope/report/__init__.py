"""Reports over run directories: tables (mean ± std over seeds), figures and one self-contained HTML page.

Modules: ``runs`` (reading run directories), ``tables``, ``plots`` (matplotlib, Agg), ``html`` and
``build`` (``build_report(paths, out, ReportConfig())``). Nothing is imported here, so that reading
runs does not load matplotlib.
"""
