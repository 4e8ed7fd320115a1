"""Stepping through a TorchScript module in Python, so that hooks reach modules below compiled code.

TorchScript modules take no forward hooks, and a scripted parent calls its children inside compiled code. While
hooks are active, `ScriptStepper` runs a scripted method's graph node by node in Python, but only along the
paths that lead to a hooked module: every other call (and every operator) runs compiled. A construct it cannot
run in Python raises `Unsteppable`, naming the module whose hookpoints it hides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FORWARD = re.compile(r"^forward(__\d+)?$")  # a scripted forward, or one of its overloads (forward__0, ...)

class Unsteppable(Exception):
    """A node of a scripted method that the stepper cannot run in Python (raised while hooks need to reach below)."""

    def __init__(self, kind: str, path: str, method: str, hides: str | None = None, inclusive: bool = False):
        super().__init__(f"{kind} in {path or 'the model'}'s {method}")
        self.kind, self.path, self.method = kind, path, method
        self.hides = path if hides is None else hides  # the module path whose hookpoints it hides
        self.inclusive = inclusive  # the module at `hides` as well as those below it

    def hidden(self, names) -> list[str]:
        """Which of `names` this construct keeps hooks from reaching."""
        root = self.hides
        return [n for n in names if not root or n.startswith(root + ".") or (self.inclusive and n == root)]


_LIST_MUTATORS = {"aten::append", "aten::extend", "aten::insert", "aten::pop", "aten::clear", "aten::_set_item",
                  "aten::remove", "aten::reverse", "aten::update", "aten::setdefault"}


@dataclass
class _Step:
    """One node of a scripted graph, prepared for stepping."""

    kind: str
    node: Any  # torch._C.Node (its graph is kept alive by the plan cache)
    inputs: list[int]
    outputs: list[int]
    attr: str | None = None  # the name of a GetAttr/SetAttr/CallMethod
    value: Any = None  # a constant's value
    blocks: list[_Block] = field(default_factory=list)
    fn: Any = None  # the node compiled on its own, on first use
    fn_inputs: list[int] | None = None
    mutates: bool = False  # writes to a list or dict input
    opaque: bool = False  # holds blocks of code other than an if or a loop (closures and the like)


@dataclass
class _Block:
    params: list[int]
    steps: list[_Step]
    returns: list[int]


class ScriptStepper:
    """Runs a TorchScript module's method graph node by node in Python, so hooks can fire at module paths inside.

    Only calls on the way to a hooked module are stepped into; every other module call and every operator runs
    compiled (an operator as a one-node TorchScript function). Hooks are fn(module, args, output) -> output or
    None, as for `register_forward_hook`, and run in order after the hooked module's forward.
    """

    def __init__(self) -> None:
        self._plans: dict[tuple[str, str], tuple[Any, _Block]] = {}

    @property
    def stepped(self) -> list[str]:
        """"type.method" of every scripted method stepped through so far (the rest ran compiled)."""
        return sorted(f"{t}.{m}" for t, m in self._plans)

    def run(self, module, hooks: dict[str, list[Callable]], *args, method: str = "forward"):
        """`module.<method>(*args)` with `hooks` ({module path: [hook, ...]}) applied."""
        targets = [p for p in hooks if p]
        return self._method(module, method, "", list(args), hooks, targets)

    # ---- graphs ----
    def _plan(self, obj, method: str) -> _Block:
        graph = getattr(obj, method).graph
        key = (str(next(iter(graph.inputs())).type()), method)
        if key not in self._plans:
            self._plans[key] = (graph, self._block(graph.inputs(), graph.nodes(), graph.outputs()))
        return self._plans[key][1]

    def _block(self, params, nodes, returns) -> _Block:
        return _Block([v.unique() for v in params], [self._step(n) for n in nodes], [v.unique() for v in returns])

    def _step(self, node) -> _Step:
        kind = node.kind()
        step = _Step(kind, node, [v.unique() for v in node.inputs()], [v.unique() for v in node.outputs()])
        if kind in ("prim::GetAttr", "prim::SetAttr", "prim::CallMethod"):
            step.attr = node.s("name")
        elif kind == "prim::Constant":
            out = node.output()
            try:
                step.value = None if out.type().kind() == "FunctionType" else out.toIValue()
            except Exception:  # a constant only a compiled step can hold
                step.value = None
        elif kind in ("prim::If", "prim::Loop"):
            step.blocks = [self._block(b.inputs(), b.nodes(), b.outputs()) for b in node.blocks()]
        elif kind in _LIST_MUTATORS:
            step.mutates = _writes_container(node)
        elif any(True for _ in node.blocks()):
            step.opaque = True
        return step

    def _method(self, obj, method: str, path: str, args: list, hooks, targets):
        plan = self._plan(obj, method)
        if len(args) + 1 < len(plan.params):  # trailing arguments left to their defaults
            schema = getattr(obj, method).schema.arguments
            args = [*args, *(a.default_value for a in schema[len(args) + 1:])]
        env: dict[int, Any] = dict(zip(plan.params, [obj, *args], strict=True))
        paths = {plan.params[0]: path}
        return self._run(plan, env, paths, path, method, hooks, targets)[0]

    def _run(self, block: _Block, env: dict, paths: dict, path: str, method: str, hooks, targets) -> list:
        for step in block.steps:
            self._do(step, env, paths, path, method, hooks, targets)
        return [env[u] for u in block.returns]

    def _below(self, path: str, targets) -> bool:
        """Whether some hooked module lies strictly below `path`."""
        return any(t.startswith(path + ".") for t in targets) if path else bool(targets)

    def _do(self, step: _Step, env: dict, paths: dict, path: str, method: str, hooks, targets) -> None:
        kind, ins = step.kind, step.inputs
        if kind == "prim::Constant":
            env[step.outputs[0]] = step.value
        elif kind == "prim::GetAttr":
            parent = env[ins[0]]
            value = getattr(parent, step.attr)
            env[step.outputs[0]] = value
            if ins[0] in paths and _is_module(value):
                base = paths[ins[0]]
                paths[step.outputs[0]] = f"{base}.{step.attr}" if base else step.attr
        elif kind == "prim::SetAttr":
            setattr(env[ins[0]], step.attr, env[ins[1]])
        elif kind == "prim::CallMethod":
            obj, args = env[ins[0]], [env[u] for u in ins[1:]]
            where = paths.get(ins[0])
            if where is not None and self._below(where, targets):
                out = self._method(obj, step.attr, where, args, hooks, targets)
            else:
                out = getattr(obj, step.attr)(*args)
            if where and where in hooks and FORWARD.match(step.attr):
                for hook in hooks[where]:
                    changed = hook(obj, tuple(args), out)
                    out = out if changed is None else changed
            _assign(step, env, out)
        elif kind == "prim::ListConstruct":
            env[step.outputs[0]] = [env[u] for u in ins]
        elif kind == "prim::TupleConstruct":
            env[step.outputs[0]] = tuple(env[u] for u in ins)
        elif kind == "prim::DictConstruct":
            values = [env[u] for u in ins]
            env[step.outputs[0]] = dict(zip(values[::2], values[1::2], strict=True))
        elif kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            for u, value in zip(step.outputs, env[ins[0]], strict=True):
                env[u] = value
        elif kind == "prim::TupleIndex":
            env[step.outputs[0]] = env[ins[0]][env[ins[1]]]
        elif kind == "prim::unchecked_cast":
            env[step.outputs[0]] = env[ins[0]]
        elif kind == "prim::Uninitialized":  # a placeholder on paths that raise
            env[step.outputs[0]] = None
        elif kind == "prim::If":
            chosen = step.blocks[0 if env[ins[0]] else 1]
            _assign_all(step, env, self._run(chosen, env, paths, path, method, hooks, targets))
        elif kind == "prim::Loop":
            body = step.blocks[0]
            trips, go, carried = env[ins[0]], bool(env[ins[1]]), [env[u] for u in ins[2:]]
            i = 0
            while go and i < trips:
                env.update(zip(body.params, [i, *carried], strict=True))
                go, *carried = self._run(body, env, paths, path, method, hooks, targets)
                go, i = bool(go), i + 1
            _assign_all(step, env, carried)
        elif step.mutates:
            _assign(step, env, _mutate(kind, [env[u] for u in ins]))
        elif kind == "aten::len" and not _is_tensor(env[ins[0]]):
            env[step.outputs[0]] = len(env[ins[0]])
        elif kind == "aten::__getitem__" and isinstance(env[ins[0]], (list, tuple, dict)):
            env[step.outputs[0]] = env[ins[0]][env[ins[1]]]
        else:
            self._generic(step, env, paths, path, method, targets)

    def _generic(self, step: _Step, env: dict, paths: dict, path: str, method: str, targets) -> None:
        """Any other node, compiled on its own into a one-node function (CallFunction bodies inlined into it)."""
        if step.opaque:
            raise Unsteppable(step.kind, path, method)
        for u in step.inputs:  # a module handed to compiled code would run without its hooks
            if u in paths and (paths[u] in targets or self._below(paths[u], targets)):
                raise Unsteppable(step.kind, path, method, hides=paths[u], inclusive=True)
        if step.fn is None:
            step.fn, step.fn_inputs = _compile_node(step.node, step.kind, path, method)
        out = step.fn(*[env[u] for u in step.fn_inputs])
        _assign(step, env, out)


def _assign(step: _Step, env: dict, out) -> None:
    """Bind a call's result: nothing, one value, or a tuple spread over several outputs."""
    if len(step.outputs) > 1:
        _assign_all(step, env, out)
    elif step.outputs:
        env[step.outputs[0]] = out


def _assign_all(step: _Step, env: dict, values) -> None:
    for u, value in zip(step.outputs, values, strict=True):
        env[u] = value


def _is_module(value) -> bool:
    import torch

    return isinstance(value, torch.nn.Module)


def _is_tensor(value) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _writes_container(node) -> bool:
    """Whether the node writes to a list or dict input (those must stay the Python objects the stepper holds)."""
    import torch

    try:
        schema = torch._C.parse_schema(node.schema())
    except RuntimeError:
        return False
    for arg, value in zip(schema.arguments, node.inputs(), strict=False):
        if arg.alias_info is not None and arg.alias_info.is_write and value.type().kind() in ("ListType",
                                                                                              "DictType"):
            return True
    return False


def _mutate(kind: str, args: list):
    """Python's own list/dict mutation for a container-writing operator (args in schema order)."""
    target, rest = args[0], args[1:]
    if kind == "aten::append":
        target.append(rest[0])
        return target
    if kind == "aten::extend":
        target.extend(rest[0])
        return None
    if kind == "aten::insert":
        target.insert(rest[0], rest[1])
        return None
    if kind == "aten::pop":
        return target.pop(*rest) if isinstance(target, dict) else target.pop(rest[0] if rest else -1)
    if kind == "aten::clear":
        target.clear()
        return None
    if kind == "aten::_set_item":
        target[rest[0]] = rest[1]
        return None if isinstance(target, dict) else target
    if kind == "aten::remove":
        target.remove(rest[0])
        return None
    if kind == "aten::reverse":
        target.reverse()
        return None
    if kind == "aten::update":
        target.update(rest[0])
        return None
    if kind == "aten::setdefault":
        return target.setdefault(rest[0], rest[1])
    raise AssertionError(kind)


def _compile_node(node, kind: str, path: str, method: str):
    """(function, input ids): `node` alone in a fresh graph, compiled; constants without a Python value (functions)
    are copied into it."""
    import torch

    try:
        graph = torch._C.Graph()
        mapped: dict[int, Any] = {}
        order: list[int] = []
        for value in node.inputs():
            if value.unique() in mapped:
                continue
            producer = value.node()
            if producer.kind() == "prim::Constant" and not _python_constant(value):
                clone = graph.createClone(producer, lambda v: v)
                graph.insertNode(clone)
                mapped[value.unique()] = clone.output()
            else:
                new = graph.addInput()
                new.setType(value.type())
                mapped[value.unique()] = new
                order.append(value.unique())
        copy = graph.createClone(node, lambda v: mapped[v.unique()])
        graph.insertNode(copy)
        for out in copy.outputs():
            graph.registerOutput(out)
        torch._C._jit_pass_inline(graph)
        fn = torch._C._create_function_from_graph("musicsae_step", graph)
    except Exception as exc:  # any failure means this node cannot run on its own
        raise Unsteppable(kind, path, method) from exc
    return fn, order


def _python_constant(value) -> bool:
    if value.type().kind() == "FunctionType":
        return False
    try:
        value.toIValue()
    except Exception:
        return False
    return True


def chain(fns: list[Callable]) -> Callable:
    """One forward hook running `fns` in order, each seeing the previous one's output."""
    def hook(module, args, output):
        for fn in fns:
            changed = fn(module, args, output)
            output = output if changed is None else changed
        return output
    return hook
