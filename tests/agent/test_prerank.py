"""The pre-ranking uses what the issue names before lexical similarity: paths and traceback
frames, dotted module names and imports, the files defining the symbols it uses, and the
files those import. The repository here is shaped like sympy's: many files share words."""

from __future__ import annotations

from harness.agent.prerank import prerank

# A package where every file talks about units, so BM25 alone cannot tell them apart.
FILER = "# units units dimension dimension factor\n"
REPO = {
    "pkg/__init__.py": "from pkg.physics import units\n",
    "pkg/physics/__init__.py": "",
    "pkg/physics/units/__init__.py": (
        "from .quantities import Quantity\nfrom .unitsystem import UnitSystem\n" + FILER
    ),
    "pkg/physics/units/quantities.py": "class Quantity:\n    pass\n" + FILER * 3,
    "pkg/physics/units/unitsystem.py": (
        "from .dimensions import Dimension\n\n\nclass UnitSystem:\n"
        "    def _collect_factor_and_dimension(self, expr):\n        return expr\n"
    ),
    "pkg/physics/units/dimensions.py": "class Dimension:\n    pass\n" + FILER,
    "pkg/physics/units/systems/__init__.py": "",
    "pkg/physics/units/systems/si.py": (
        "from pkg.physics.units.unitsystem import UnitSystem\nSI = UnitSystem()\n" + FILER
    ),
    "pkg/core/expr.py": "class Expr:\n    def exp(self):\n        pass\n" + FILER * 5,
    "pkg/printing/str.py": "def sstr(expr):\n    return 'units dimension factor'\n" + FILER * 8,
}
REPO.update({f"pkg/misc/filler{i}.py": FILER * (i + 1) for i in range(20)})


def rank(issue: str, repo: dict[str, str] = REPO) -> list[str]:
    return list(prerank(issue, repo))


def test_the_file_defining_a_method_the_issue_calls_comes_first() -> None:
    # The sympy-24066 shape: the issue calls a method on an object of another module.
    issue = (
        "SI._collect_factor_and_dimension() cannot detect that the exponent is dimensionless\n"
        "```python\nfrom pkg.physics import units\n"
        "from pkg.physics.units.systems.si import SI\n"
        "dim = SI._collect_factor_and_dimension(expr)[1]\n```\n"
    )
    ranked = rank(issue)
    assert ranked[0] == "pkg/physics/units/unitsystem.py"
    # The modules the issue imports by dotted name come right after.
    assert set(ranked[1:4]) >= {"pkg/physics/units/systems/si.py"}
    assert ranked.index("pkg/physics/units/__init__.py") < ranked.index("pkg/printing/str.py")


def test_traceback_frames_name_files_by_the_tail_of_their_path() -> None:
    issue = (
        "Printing crashes:\n```\nTraceback (most recent call last):\n"
        '  File "/opt/venv/lib/python3.11/site-packages/pkg/printing/str.py", line 2, in sstr\n'
        "TypeError: boom\n```\n"
    )
    assert rank(issue)[0] == "pkg/printing/str.py"


def test_files_a_named_file_imports_rank_above_unrelated_ones() -> None:
    issue = "Wrong result in pkg/physics/units/unitsystem.py when combining units"
    ranked = rank(issue)
    assert ranked[0] == "pkg/physics/units/unitsystem.py"
    dims = ranked.index("pkg/physics/units/dimensions.py")
    assert dims < min(ranked.index(f"pkg/misc/filler{i}.py") for i in range(20))


def test_plain_words_are_not_symbols() -> None:
    # "dimension" and "factor" are prose here: a file defining `factor` must not win on it.
    repo = {**REPO, "pkg/polys/factor.py": "def factor(x):\n    return x\n"}
    issue = "The dimension factor looks wrong when I print units of a quantity"
    assert rank(issue, repo)[0] != "pkg/polys/factor.py"


def test_a_hostile_issue_is_handled_in_one_pass() -> None:
    # Long runs of path characters without a source suffix: the path scan is linear.
    issue = "a" * 200_000 + " " + "/x" * 50_000 + " pkg/printing/str.py"
    assert rank(issue)[0] == "pkg/printing/str.py"
