"""Bar charts for the explorer, laid out here and drawn as SVG by ``templates/explorer/_chart.html``.

No JavaScript and no chart library: the server computes each bar's rectangle in whole SVG user
units (integer arithmetic, so an amount never passes through a float), and the template writes
``<rect>`` and ``<text>`` elements that Jinja escapes like any other text. Colours and fonts come
from the bundled stylesheet through classes: the page's CSP allows no inline style.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH = 1000
PLOT_TOP = 16
PLOT_HEIGHT = 160
AXIS_LEFT = 120  # room for the value labels of a column chart
LABEL_WIDTH = 260  # room for the category labels of a bar chart
ROW_HEIGHT = 28


@dataclass(frozen=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    label: str  # shown beside or under the bar ("" to leave it out)
    value_text: str  # the exact value, shown at the bar's end and as its tooltip
    label_x: int
    label_y: int
    value_x: int
    value_y: int


@dataclass(frozen=True)
class Chart:
    title: str
    caption: str
    width: int
    height: int
    bars: list[Bar]
    gridlines: list[tuple[int, str]]  # (y or x of the line, its label)
    horizontal: bool
    empty: bool


def _scaled(value: int, top: int, length: int) -> int:
    """``value`` as a length out of ``length``, where ``top`` fills it; at least 1 if non-zero."""
    if top <= 0 or value <= 0:
        return 0
    return max(1, value * length // top)


def columns(title: str, caption: str, values: Sequence[int], labels: Sequence[str], fmt: Callable[[int], str]) -> Chart:
    """Vertical bars, one per value, left to right (e.g. hours), with the largest value marked."""
    count = max(1, len(values))
    top = max(values, default=0)
    slot = (WIDTH - AXIS_LEFT) // count
    bottom = PLOT_TOP + PLOT_HEIGHT
    bars = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = _scaled(value, top, PLOT_HEIGHT)
        x = AXIS_LEFT + i * slot + max(1, slot // 8)
        bars.append(
            Bar(
                x=x,
                y=bottom - height,
                width=max(1, slot - 2 * max(1, slot // 8)),
                height=height,
                label=label,
                value_text=fmt(value),
                label_x=AXIS_LEFT + i * slot + slot // 2,
                label_y=bottom + 16,
                value_x=0,
                value_y=0,
            )
        )
    grid = [(bottom, fmt(0))] + ([(PLOT_TOP, fmt(top))] if top else [])
    return Chart(title, caption, WIDTH, bottom + 28, bars, grid, horizontal=False, empty=top == 0)


def rows(title: str, caption: str, values: Sequence[int], labels: Sequence[str], fmt: Callable[[int], str]) -> Chart:
    """Horizontal bars, one per labelled category (e.g. routes), each with its exact value."""
    top = max(values, default=0)
    length = WIDTH - LABEL_WIDTH - 150  # room for the value text after the longest bar
    bars = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        y = PLOT_TOP + i * ROW_HEIGHT
        width = _scaled(value, top, length)
        bars.append(
            Bar(
                x=LABEL_WIDTH,
                y=y + 4,
                width=width,
                height=ROW_HEIGHT - 8,
                label=label,
                value_text=fmt(value),
                label_x=LABEL_WIDTH - 8,
                label_y=y + ROW_HEIGHT // 2 + 5,
                value_x=LABEL_WIDTH + width + 6,
                value_y=y + ROW_HEIGHT // 2 + 5,
            )
        )
    height = PLOT_TOP + max(1, len(values)) * ROW_HEIGHT + 8
    return Chart(title, caption, WIDTH, height, bars, [(LABEL_WIDTH, "")], horizontal=True, empty=top == 0)
