"""Figures: one histogram panel per series, so no colour has to be matched to a legend."""

from pipeline.core.plots import histograms


def test_each_series_gets_its_own_titled_panel_on_shared_axes():
    series = {f"gen_{g}/level_{lvl}": [0.125 * (g + lvl), 0.5] for g in range(3) for lvl in range(3)}
    fig = histograms(series, "pass rate by category", "pass rate")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [f"{name} (n=2)" for name in series]
    assert {ax.get_xlim() for ax in panels} == {panels[0].get_xlim()}
    assert all(sum(bar.get_height() for bar in ax.patches) == 2 for ax in panels)


def test_a_grid_that_is_not_full_hides_its_spare_panels():
    fig = histograms({"stage_1": [0.9], "stage_2": [0.5, 0.4], "stage_3": [0.1], "stage_4": []}, "t", "pass rate")
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [
        "stage_1 (n=1)", "stage_2 (n=2)", "stage_3 (n=1)", "stage_4 (n=0)"]
