import pytest

from effects.colors import parse_color


@pytest.mark.parametrize(
    "text, rgb",
    [
        ("#00FF00", (0, 255, 0)),
        ("00ff00", (0, 255, 0)),
        ("#0F0", (0, 255, 0)),
        ("0f0", (0, 255, 0)),
        ("255,0,0", (255, 0, 0)),
        (" 12, 34 ,56 ", (12, 34, 56)),
        ("rgb(1,2,3)", (1, 2, 3)),
        ("white", (255, 255, 255)),
        ("RebeccaPurple", (102, 51, 153)),
        ("cornflowerblue", (100, 149, 237)),
        ("#FFFFFFFF", (255, 255, 255)),
        ("rgb(100%,0%,0%)", (255, 0, 0)),
        ("rgba(1,2,3,255)", (1, 2, 3)),
        ("hsl(120,100%,50%)", (0, 255, 0)),
        ("hsv(240,100%,100%)", (0, 0, 255)),
    ],
)
def test_accepted_forms(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize("text", ["", "  ", "#12345", "#GGGGGG", "256,0,0", "1,2", "reddish", "#00FF0080", "1,2,3,4",
                                  # out of range, though Pillow's ImageColor returns channels for them (300, or 510...)
                                  "rgb(300,0,0)", "rgb(18,3072,0)", "rgba(300,0,0,255)", "rgb(200%,0%,0%)",
                                  "hsl(0,200%,50%)", "hsl(400,100%,50%)", "hsb(0,100%,300%)", "rgba(0,0,0,999)"])
def test_rejected_forms(text):
    with pytest.raises(ValueError):
        parse_color(text)
