"""A static read of the student's code, on the trusted side.

The sandbox can only report what the student's code let it see; this module reads the
code itself, as text, without running it. For one graded function it finds the
*closure*: the definition of that name active at the test cell, and, recursively, the
module-level names it uses (helper functions, aliases such as ``F`` or ``sm =
torch.softmax``, default arguments bound at definition time). In that closure it looks for

- **delegation**: any use of a forbidden family (``torch.softmax``, ``x.softmax(...)``,
  ``nn.Softmax``, ``F.scaled_dot_product_attention``, the library ``attncourse``, the
  grading package), also as a string constant naming one;
- **code the grader cannot read**: ``getattr`` with a computed name, ``eval``/``exec``/
  ``compile``, ``__import__``/``importlib``, ``torch.ops``, ``torch._C``, ``__dict__``,
  ``globals()``/``vars()``, a name bound only by code the grader cannot see;
- for tasks whose method is audited, **computing outside torch** (NumPy, ``.tolist()``),
  which the method audit cannot follow.

Across the whole notebook it looks for **tampering**: code that changes torch, the
library or the grader (assigning to their attributes, ``setattr`` on them), or reaches
for the interpreter's internals (``ctypes``, ``sys.settrace``, ``gc.get_objects``, frames,
dispatcher modes, the grading package beyond ``attncourse.grading.checks``), and IPython
hooks, which are harmless under the sandbox but worth a look.

Every finding names the cell and line. The engine turns delegation, unreadable code,
computing outside torch and tampering into an automatic 0 for the checks they concern;
IPython hooks only into a note for the instructor's review.
"""

from __future__ import annotations

import ast
import builtins
import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

from .tripwire import ATTENTION_FAMILY, LIBRARY_FAMILY, SOFTMAX_FAMILY

# Names whose use gives a family away, whatever object they are reached through.
SOFTMAX_NAMES = frozenset(
    {name.rsplit(".", 1)[-1] for name in SOFTMAX_FAMILY}
    | {"Softmax", "LogSoftmax", "Softmin", "Softmax2d", "_softmax", "_log_softmax", "_safe_softmax", "softmin"}
)
ATTENTION_NAMES = frozenset(
    {name.rsplit(".", 1)[-1] for name in ATTENTION_FAMILY}
    | {
        "_native_multi_head_attention",
        "_scaled_dot_product_attention_math",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "sdpa_kernel",
    }
)
# Attribute names and module paths that make code unreadable or reach the interpreter.
HIDDEN_ATTRIBUTES = frozenset(
    {
        "__dict__", "__getattribute__", "__globals__", "__builtins__", "__code__", "__closure__",
        "__subclasses__", "__mro__", "__bases__", "__import__", "__loader__", "__spec__",
        "f_globals", "f_locals", "f_back", "gi_frame",
    }
)
HIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "globals", "vars", "breakpoint"})
HIDDEN_MODULES = (
    "torch.ops", "torch._C", "torch._VF", "torch._ops", "torch.overrides", "torch.utils._python_dispatch",
    "torch._dynamo", "torch.library", "importlib", "ctypes", "builtins", "sys.modules", "gc", "inspect",
    "types.FunctionType", "types.CodeType", "operator.attrgetter", "operator.methodcaller",
)
OUTSIDE_TORCH_MODULES = ("numpy", "scipy", "jax", "math.exp", "math.log", "math.fsum")
OUTSIDE_TORCH_METHODS = frozenset({"numpy", "tolist"})
# Across the notebook: reaching for the interpreter or the grader.
TAMPER_MODULES = (
    "ctypes", "torch._C", "torch.utils._python_dispatch", "torch.overrides", "sys.settrace",
    "sys.setprofile", "sys._getframe", "threading.settrace", "threading.setprofile", "gc.get_objects",
    "gc.get_referrers", "gc.get_referents", "inspect.currentframe", "inspect.stack", "inspect.getouterframes",
    "sys.modules", "builtins", "importlib", "__import__",
)
TAMPERABLE_ROOTS = ("torch", "numpy", "attncourse", "builtins", "math", "IPython", "nbgrader")
UNTAMPERED = ("torch.backends",)  # settings a notebook may change (cudnn.deterministic...)
ALLOWED_GRADING = ("attncourse.grading.checks", "attncourse.grading.protect_kernel")
IPYTHON_HOOKS = frozenset(
    {"events", "input_transformers_post", "input_transformers_cleanup", "set_custom_exc", "showtraceback",
     "_showtraceback", "register_magic_function", "ast_transformers", "set_hook", "display_formatter"}
)


@dataclass(frozen=True)
class Finding:
    """Something the static read found: ``kind`` is 'delegation', 'unreadable',
    'outside_torch', 'tampering' or 'hook'; ``cell`` counts code cells from 1."""

    kind: str
    cell: int
    line: int
    text: str

    def where(self) -> str:
        return f"code cell {self.cell}, line {self.line}"


@dataclass(frozen=True)
class CodeCell:
    """A code cell: its number among the notebook's code cells (from 1), its source, and
    whether the course provides it (``trusted``: the set-up cell). Trusted cells define
    names (``torch``, imported by the set-up cell) but are never reported."""

    number: int
    source: str
    trusted: bool = False


# ---------------------------------------------------------------------------------------
# Parsing cells (IPython syntax included)
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def parse_cell(source: str) -> ast.Module | None:
    """The cell as a module, magics turned into plain calls; None when it does not parse.
    (Cached: callers must not change the tree.)"""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        source = TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - fall back to the raw source
        pass
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


@dataclass
class _Binding:
    cell: int
    node: ast.AST  # a def, class, import alias or the value bound
    dotted: str | None = None  # for imports and aliases: the dotted path bound


def _bindings(cells: Sequence[CodeCell]) -> dict[str, list[_Binding]]:
    """Module-level names bound by the cells, in order, with what binds them."""
    found: dict[str, list[_Binding]] = {}

    def add(name: str, binding: _Binding) -> None:
        found.setdefault(name, []).append(binding)

    def visit(statements: Iterable[ast.stmt], cell: int) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                add(node.name, _Binding(cell, node))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        add(alias.asname, _Binding(cell, node, alias.name))
                    else:
                        root = alias.name.split(".")[0]
                        add(root, _Binding(cell, node, root))
            elif isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                for alias in node.names:
                    if alias.name == "*":
                        add("*", _Binding(cell, node, module))
                    else:
                        add(alias.asname or alias.name, _Binding(cell, node, f"{module}.{alias.name}"))
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in _target_names(target):
                        add(name, _Binding(cell, node.value if node.value is not None else node))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                for name in _target_names(node.target):
                    add(name, _Binding(cell, node))
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        for name in _target_names(item.optional_vars):
                            add(name, _Binding(cell, node))
            for field_name in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    break
                children = getattr(node, field_name, None)
                if isinstance(children, list):
                    visit([c for c in children if isinstance(c, ast.stmt)], cell)
                    for handler in children:
                        if isinstance(handler, ast.ExceptHandler):
                            if handler.name:
                                add(handler.name, _Binding(cell, handler))
                            visit(handler.body, cell)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.NamedExpr):
                add(node.value.target.id, _Binding(cell, node.value.value))

    for cell in cells:
        tree = parse_cell(cell.source)
        if tree is not None:
            visit(tree.body, cell.number)
    return found


def _target_names(target: ast.AST) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for element in target.elts for n in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


# ---------------------------------------------------------------------------------------
# Resolving names to dotted paths
# ---------------------------------------------------------------------------------------


class _Resolver:
    """Turns expressions into dotted paths (``F.softmax`` -> ``torch.nn.functional.softmax``)
    through the notebook's imports and simple aliases."""

    def __init__(self, bindings: dict[str, list[_Binding]]):
        self.bindings = bindings

    def active(self, name: str) -> list[_Binding]:
        """The bindings of ``name`` that can be active: the last one, and any earlier one
        in the same cell (a conditional definition)."""
        found = self.bindings.get(name, [])
        if not found:
            return []
        last = found[-1]
        return [b for b in found if b.cell == last.cell]

    def dotted(self, node: ast.AST, depth: int = 0) -> str | None:
        if depth > 20:
            return None
        if isinstance(node, ast.Name):
            for binding in reversed(self.active(node.id)):
                if binding.dotted is not None:
                    return binding.dotted
                if isinstance(binding.node, (ast.Name, ast.Attribute)):
                    return self.dotted(binding.node, depth + 1)
            return None
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value, depth + 1)
            return f"{base}.{node.attr}" if base is not None else None
        return None


def _matches(path: str, prefixes: Iterable[str]) -> str | None:
    for prefix in prefixes:
        if path == prefix or path.startswith(prefix + "."):
            return prefix
    return None


# ---------------------------------------------------------------------------------------
# The closure of a graded function
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rules:
    """What the static read of one task looks for."""

    forbidden_names: frozenset[str]  # attribute or imported names of forbidden families
    library: bool  # the library (attncourse) is forbidden
    outside_torch: bool  # computing with NumPy and friends hides the method from the audit

    @classmethod
    def for_task(cls, forbidden: Sequence[str], audited: bool) -> "Rules":
        names: set[str] = set()
        if set(forbidden) & set(SOFTMAX_FAMILY):
            names |= SOFTMAX_NAMES
        if set(forbidden) & set(ATTENTION_FAMILY):
            names |= ATTENTION_NAMES
        library = bool(set(forbidden) & set(LIBRARY_FAMILY)) or any(f.startswith("attncourse") for f in forbidden)
        return cls(frozenset(names), library, audited)


def audit_function(cells: Sequence[CodeCell], name: str, rules: Rules) -> list[Finding]:
    """Findings in the closure of ``name`` as the cells define it."""
    resolver = _Resolver(_bindings(cells))
    if not resolver.active(name):
        return [Finding("unreadable", 0, 0, f"{name} is not defined by any def, class, import or assignment the grader can read")]
    trusted = {c.number for c in cells if c.trusted}
    findings: list[Finding] = []
    for cell, node, dotted in _closure(resolver, name):
        if cell in trusted:
            continue
        if dotted is not None:
            findings += _check_path(dotted, rules, cell, getattr(node, "lineno", 0))
            continue
        for child in ast.walk(node):
            findings += _check_node(child, resolver, rules, cell)
    return _unique(findings)


def closure_cells(cells: Sequence[CodeCell], name: str) -> set[int]:
    """The numbers of the cells that hold the closure of ``name``."""
    resolver = _Resolver(_bindings(cells))
    return {cell for cell, _node, _dotted in _closure(resolver, name)}


# Names a notebook has without defining them: IPython's, and the shell's history.
SHELL_NAMES = frozenset({"get_ipython", "display", "In", "Out", "_", "__", "___", "exit", "quit", "_ih", "_oh", "_dh"})


def _closure(resolver: _Resolver, name: str):
    """(cell, node, dotted path or None) for every binding the definition of ``name``
    depends on, itself included. A name used there that nothing the grader can read
    defines (set through ``globals()``, ``exec``...) comes back as a node of its own with
    the dotted path ``"?<name>"``; with a star import, as ``"<module>.<name>"``."""
    seen: set[int] = set()
    todo = [(b.cell, b.node, b.dotted) for b in resolver.active(name)]
    reported: set[str] = set()
    while todo:
        cell, node, dotted = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield cell, node, dotted
        if dotted is not None:
            continue
        local_names = _local_names(node)
        for child in ast.walk(node):
            if not (isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load)) or child.id in local_names:
                continue
            bindings = resolver.active(child.id)
            for binding in bindings:
                todo.append((binding.cell, binding.node, binding.dotted))
            if bindings or child.id in reported or hasattr(builtins, child.id) or child.id in SHELL_NAMES:
                continue
            reported.add(child.id)
            stars = resolver.bindings.get("*", [])
            if stars:
                for star in stars:
                    yield star.cell, child, f"{star.dotted}.{child.id}"
            else:
                yield cell, child, f"?{child.id}"


def _local_names(node: ast.AST) -> set[str]:
    """Names a function or class binds for itself (parameters, assignments inside)."""
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.arg):
            names.add(child.arg)
        elif isinstance(child, ast.Name) and isinstance(child.ctx, (ast.Store, ast.Del)):
            names.add(child.id)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child is not node:
            names.add(child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in child.names}
        elif isinstance(child, ast.ExceptHandler) and child.name:
            names.add(child.name)
        elif isinstance(child, (ast.MatchAs, ast.MatchStar)) and child.name:
            names.add(child.name)
    return names if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)) else set()


def _check_path(path: str, rules: Rules, cell: int, line: int) -> list[Finding]:
    if path.startswith("?"):
        return [Finding("unreadable", cell, line, f"{path[1:]}, which no def, import or assignment defines")]
    findings = []
    last = path.rsplit(".", 1)[-1]
    if last in rules.forbidden_names:
        findings.append(Finding("delegation", cell, line, path))
    if _matches(path, ("attncourse.grading",)):
        findings.append(Finding("delegation", cell, line, f"{path} (the grading package)"))
    elif rules.library and _matches(path, ("attncourse",)):
        findings.append(Finding("delegation", cell, line, f"{path} (the course's library)"))
    hidden = _matches(path, HIDDEN_MODULES)
    if hidden:
        findings.append(Finding("unreadable", cell, line, path))
    if rules.outside_torch and _matches(path, OUTSIDE_TORCH_MODULES):
        findings.append(Finding("outside_torch", cell, line, path))
    return findings


def _check_node(node: ast.AST, resolver: _Resolver, rules: Rules, cell: int) -> list[Finding]:
    line = getattr(node, "lineno", 0)
    findings: list[Finding] = []
    if isinstance(node, ast.Attribute):
        path = resolver.dotted(node)
        if path is not None:
            findings += _check_path(path, rules, cell, line)
        elif node.attr in rules.forbidden_names:
            findings.append(Finding("delegation", cell, line, f".{node.attr}"))
        if node.attr in HIDDEN_ATTRIBUTES:
            findings.append(Finding("unreadable", cell, line, f".{node.attr}"))
        if rules.outside_torch and node.attr in OUTSIDE_TORCH_METHODS and path is None:
            findings.append(Finding("outside_torch", cell, line, f".{node.attr}()"))
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        path = resolver.dotted(node)
        if path is not None:
            findings += _check_path(path, rules, cell, line)
        if node.id in HIDDEN_CALLS:
            findings.append(Finding("unreadable", cell, line, f"{node.id}()"))
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and _computed_lookup(node):
            findings.append(Finding("unreadable", cell, line, f"{func.id}() with a computed name"))
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value in rules.forbidden_names:
            findings.append(Finding("delegation", cell, line, f"the string {node.value!r}"))
        if _matches(node.value, ("attncourse.grading",)) or (rules.library and _matches(node.value, ("attncourse",))):
            findings.append(Finding("delegation", cell, line, f"the string {node.value!r}"))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        for alias in node.names:
            module = alias.name if isinstance(node, ast.Import) else f"{node.module or ''}.{alias.name}"
            findings += _check_path(module, rules, cell, line)
    return findings


def _computed_lookup(call: ast.Call) -> bool:
    """True for ``getattr(obj, name)`` with a name that is not a constant, on anything but
    the object's own instance or class (``getattr(self, name)`` builds modules honestly)."""
    if len(call.args) < 2 or isinstance(call.args[1], ast.Constant):
        return False
    target = call.args[0]
    return not (isinstance(target, ast.Name) and target.id in ("self", "cls"))


def _unique(findings: list[Finding]) -> list[Finding]:
    seen, result = set(), []
    for finding in sorted(findings, key=lambda f: (f.cell, f.line, f.kind, f.text)):
        key = (finding.kind, finding.cell, finding.line, finding.text)
        if key not in seen:
            seen.add(key)
            result.append(finding)
    return result


# ---------------------------------------------------------------------------------------
# Tampering anywhere in the notebook
# ---------------------------------------------------------------------------------------


def notebook_findings(cells: Sequence[CodeCell]) -> list[Finding]:
    """Tampering and IPython hooks in any of the student's cells."""
    resolver = _Resolver(_bindings(cells))
    findings: list[Finding] = []
    for cell in cells:
        if cell.trusted:
            continue
        tree = parse_cell(cell.source)
        if tree is None:
            continue
        for node in ast.walk(tree):
            findings += _tamper_node(node, resolver, cell.number)
    return _unique(findings)


def _tamper_node(node: ast.AST, resolver: _Resolver, cell: int) -> list[Finding]:
    line = getattr(node, "lineno", 0)
    found: list[Finding] = []
    targets: list[ast.AST] = []
    if isinstance(node, (ast.Assign, ast.Delete)):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    for target in targets:
        if isinstance(target, (ast.Attribute, ast.Subscript)):
            base = target.value if isinstance(target, ast.Subscript) else target
            path = resolver.dotted(base if isinstance(target, ast.Subscript) else target.value)
            if path is not None and _matches(path, TAMPERABLE_ROOTS) and not _matches(path, UNTAMPERED):
                shown = resolver.dotted(target) if isinstance(target, ast.Attribute) else f"{path}[...]"
                found.append(Finding("tampering", cell, line, f"changes {shown or path}"))
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and node.args:
            path = resolver.dotted(node.args[0])
            if path is not None and _matches(path, TAMPERABLE_ROOTS):
                found.append(Finding("tampering", cell, line, f"{func.id}() on {path}"))
        path = resolver.dotted(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
        if path is not None and _matches(path, ("get_ipython",)):
            pass
    if isinstance(node, ast.Attribute):
        path = resolver.dotted(node)
        if path is not None:
            if _matches(path, TAMPER_MODULES):
                found.append(Finding("tampering", cell, line, f"uses {path}"))
            if _matches(path, ("attncourse.grading",)) and not _matches(path, ALLOWED_GRADING):
                found.append(Finding("tampering", cell, line, f"uses {path}"))
        if node.attr in IPYTHON_HOOKS and _is_ipython_object(node.value, resolver):
            found.append(Finding("hook", cell, line, f"IPython's {node.attr}"))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        source_module = getattr(node, "module", None) or ""
        for alias in node.names:
            module = alias.name if isinstance(node, ast.Import) else f"{source_module}.{alias.name}"
            if _matches(module, TAMPER_MODULES) or (source_module and _matches(source_module, TAMPER_MODULES)):
                found.append(Finding("tampering", cell, line, f"imports {module}"))
            if _matches(module, ("attncourse.grading",)) and not _matches(module, ALLOWED_GRADING):
                if source_module not in ALLOWED_GRADING:
                    found.append(Finding("tampering", cell, line, f"imports {module}"))
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        if "clear_refs" in node.value or "/proc/self/" in node.value and "mem" in node.value:
            found.append(Finding("tampering", cell, line, f"the string {node.value[:60]!r}"))
    return found


def _is_ipython_object(node: ast.AST, resolver: _Resolver) -> bool:
    """True for ``get_ipython()`` (or a name bound to it) and its ``events``/``display_formatter``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get_ipython":
        return True
    if isinstance(node, ast.Name):
        return any(
            isinstance(b.node, ast.Call) and isinstance(b.node.func, ast.Name) and b.node.func.id == "get_ipython"
            for b in resolver.active(node.id)
        ) or node.id in ("ip", "shell", "ipython")
    if isinstance(node, ast.Attribute):
        return _is_ipython_object(node.value, resolver)
    return False
