import pytest

from energy_models.registry import LISTED_NAMES, Registry, UnknownNameError


def test_registry_keeps_order_and_refuses_a_name_twice():
    shapes = Registry[int]("shape")
    shapes.register("square")(4)
    shapes.register("triangle")(3)
    assert list(shapes) == ["square", "triangle"]
    assert shapes.lookup("triangle") == 3
    with pytest.raises(ValueError, match="shape 'square' is already registered"):
        shapes.register("square")(5)
    assert shapes.lookup("square") == 4


def test_unknown_names_get_the_closest_and_a_short_list():
    shapes = Registry[int]("shape")
    for name in ("square", "triangle"):
        shapes.register(name)(0)
    with pytest.raises(UnknownNameError) as info:
        shapes.lookup("sqare")
    expected = "unknown shape 'sqare'; did you mean 'square'? known: square, triangle"
    assert str(info.value) == expected
    many = [f"name{i}" for i in range(LISTED_NAMES + 1)]
    assert "known:" not in str(UnknownNameError("thing", "nam", many))
