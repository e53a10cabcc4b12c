"""Reports from stored records: tables, plots, ``RESULTS.md``/``SUMMARY.md``, the comparison with the
published tables and the README's generated sections."""
