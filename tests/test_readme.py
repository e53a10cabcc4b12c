"""The README's results section is generated from the committed result files, never typed by hand."""

from benchmarks.report import readme


def test_readme_results_section_matches_the_committed_results():
    assert readme.main(["--check"]) == 0, "run: python -m benchmarks.report.readme"


def test_the_design_screens_table_of_docs_matches_their_raw_output():
    from benchmarks.report import screens

    assert screens.main(["--check"]) == 0, "run: python -m benchmarks.report.screens"
