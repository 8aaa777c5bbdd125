"""Expands the `AWS::LanguageExtensions` transform of a CloudFormation
template, for emulators that do not implement it (moto 5.x treats
`Fn::ForEach::Name` as a resource and fails the stack; scripts/stack_test.py).

Covers what deploy/cloudformation/ferry.yaml uses, and refuses anything else
rather than guess: `Fn::ForEach` in `Resources` (not nested), over a literal
list or a `Ref` to a list parameter, with `&{Id}` / `${Id}` in the output key
and `${Id}` / `{"Ref": Id}` in the fragment (as CloudFormation substitutes
them). The other language extensions it can meet — `Fn::Length`,
`Fn::ToJsonString`, `Fn::ForEach` anywhere else, `Fn::FindInMap` with a
`DefaultValue`, an intrinsic as `DeletionPolicy` or `UpdateReplacePolicy` —
are refused with the place they were found.

Usage: cfn_expand.py TEMPLATE Key=Value...   (prints the expanded JSON)
"""

import json
import pathlib
import re
import sys

TRANSFORM = "AWS::LanguageExtensions"
FOR_EACH = "Fn::ForEach::"
UNSUPPORTED = ("Fn::Length", "Fn::ToJsonString", "Fn::ForEach")


class ExpandError(Exception):
    pass


def expand(template, parameters):
    """A copy of `template` with the transform applied for `parameters`
    (name → value as given to CreateStack; list parameters comma-separated)."""
    transforms = template.get("Transform", [])
    transforms = [transforms] if isinstance(transforms, str) else list(transforms)
    if TRANSFORM not in transforms:
        return template
    if transforms != [TRANSFORM]:
        raise ExpandError(f"only {TRANSFORM} is expanded, not {transforms}")
    expanded = {key: value for key, value in template.items() if key != "Transform"}
    resources = {}
    for name, body in template.get("Resources", {}).items():
        if not name.startswith(FOR_EACH):
            resources[name] = body
            continue
        for key, value in _for_each(name, body, template, parameters).items():
            if key in resources:
                raise ExpandError(f"{name} makes {key}, which exists already")
            resources[key] = value
    expanded["Resources"] = resources
    _refuse_unsupported(expanded, "template")
    for name, body in resources.items():
        for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
            if not isinstance(body.get(policy, ""), str):
                raise ExpandError(f"{name}: an intrinsic {policy} is not expanded by cfn_expand.py")
    return expanded


def _for_each(name, body, template, parameters):
    if not (isinstance(body, list) and len(body) == 3 and isinstance(body[2], dict)):
        raise ExpandError(f"{name}: expected [Identifier, Collection, {{OutputKey: Fragment}}]")
    identifier, collection, outputs = body
    values = _collection(name, collection, template, parameters)
    resources = {}
    for value in values:
        for key, fragment in outputs.items():
            # In a key, `&{Id}` drops what a logical id may not contain (a
            # bucket's dots and dashes); `${Id}` must fit as it is.
            out_key = key.replace("&{%s}" % identifier, re.sub(r"[^A-Za-z0-9]", "", value))
            out_key = out_key.replace("${%s}" % identifier, value)
            if not re.fullmatch(r"[A-Za-z0-9]+", out_key):
                raise ExpandError(f"{name}: {out_key!r} is not a valid logical id")
            if out_key in resources:
                raise ExpandError(f"{name}: two values make the logical id {out_key}")
            resources[out_key] = _substitute(fragment, identifier, value)
    return resources


def _collection(name, collection, template, parameters):
    if isinstance(collection, list) and all(isinstance(v, str) for v in collection):
        return collection
    if isinstance(collection, dict) and set(collection) == {"Ref"}:
        parameter = collection["Ref"]
        declared = template.get("Parameters", {}).get(parameter)
        if declared is None or "List" not in declared.get("Type", ""):
            raise ExpandError(f"{name}: Ref {parameter} is not a list parameter")
        raw = parameters.get(parameter, declared.get("Default"))
        if raw is None:
            raise ExpandError(f"{name}: parameter {parameter} has no value")
        return [v.strip() for v in raw.split(",") if v.strip()]
    raise ExpandError(f"{name}: collection {collection!r} is not supported")


def _substitute(node, identifier, value):
    if isinstance(node, dict):
        if node == {"Ref": identifier}:
            return value
        return {k: _substitute(v, identifier, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, identifier, value) for v in node]
    if isinstance(node, str):
        return node.replace("${%s}" % identifier, value).replace("&{%s}" % identifier, value)
    return node


def _refuse_unsupported(node, where):
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith(UNSUPPORTED) or (
                key == "Fn::FindInMap" and isinstance(value, list) and len(value) > 3
            ):
                raise ExpandError(f"{where}: {key} is not expanded by cfn_expand.py")
            _refuse_unsupported(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_unsupported(value, f"{where}[{i}]")


def main():
    import yaml

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from check_deploy import CfnLoader  # the template's short tags (!Ref…)

    with open(sys.argv[1]) as f:
        template = yaml.load(f, Loader=CfnLoader)
    parameters = dict(arg.split("=", 1) for arg in sys.argv[2:])
    json.dump(expand(template, parameters), sys.stdout, indent=1)


if __name__ == "__main__":
    main()
