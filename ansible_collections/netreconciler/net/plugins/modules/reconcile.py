"""Ansible module: make a host's container networking match a netreconciler spec."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: reconcile
short_description: Make a host's container networking match a netreconciler spec
description:
  - Runs C(reconciler apply) (or C(reconciler destroy) with O(state=absent)) on the target with
    JSON output and reports the plan it carried out.
  - C(changed) is exact - it is true only when the plan had at least one action.
  - Check mode plans without changing anything (C(--dry-run)). Diff mode returns the plan as
    C(before)/C(after), keyed by C(KIND ID), restricted to the objects the plan touches.
  - "An invalid spec fails with every problem located (C(FILE:LINE: field.path: message)) in RV(problems)."
options:
  src:
    description: Path of a spec file on the target. Exactly one of O(src) and O(spec) is required.
    type: path
    aliases: [spec_file]
  spec:
    description:
      - An inline spec, as a mapping (written out as JSON, which is YAML) or as YAML text.
      - Problems are reported against C(<inline spec>).
    type: raw
  state:
    description:
      - V(present) applies the spec; V(absent) removes everything the spec's scope (its C(name)) owns.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description: The reconciler's state directory (IPAM records, lock). Default is the reconciler's own.
    type: path
  executable:
    description: The C(reconciler) command. Default is C(reconciler) on the PATH, then /opt/netreconciler/bin.
    type: path
author: netreconciler developers
"""

EXAMPLES = r"""
- name: Apply the pets spec
  netreconciler.net.reconcile:
    src: /etc/netreconciler/pets.yaml

- name: An inline spec
  netreconciler.net.reconcile:
    spec:
      version: 1
      name: pets
      networks: {mybridge: {driver: bridge}}
      containers:
        db: {networks: [mybridge]}
        web: {networks: [mybridge], ports: ["8000:5000"]}

- name: Remove everything the pets scope owns
  netreconciler.net.reconcile:
    src: /etc/netreconciler/pets.yaml
    state: absent
"""

RETURN = r"""
plan:
  description: The actions, as C(reconciler apply -o json) gives them (op, kind, id, fields, before, after).
  returned: success
  type: list
  elements: dict
summary:
  description: Counts, Terraform style.
  returned: success
  type: dict
  sample: {add: 14, change: 1, destroy: 0}
rendered:
  description: The plan as lines, C(+ create), C(~ change), C(-/+ replace), C(- delete).
  returned: success
  type: list
  elements: str
applied:
  description: Whether the plan was carried out (false in check mode).
  returned: success
  type: bool
problems:
  description: Every problem the reconciler reported, one per line (located ones for an invalid spec).
  returned: failure
  type: list
  elements: str
"""

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "src": {"type": "path", "aliases": ["spec_file"]},
    "spec": {"type": "raw"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "state_dir": {"type": "path"},
    "executable": {"type": "path"},
}
INLINE_LABEL = "<inline spec>"
SIGNS = {"create": "+", "change": "~", "replace": "-/+", "delete": "-"}
FALLBACK_DIRS = ["/opt/netreconciler/bin", "/usr/local/bin"]


def _spec_file(module: AnsibleModule) -> tuple[str, str | None]:
    """The spec's path, and the temporary file holding an inline spec (to delete afterwards)."""
    if module.params["src"]:
        return module.params["src"], None
    spec = module.params["spec"]
    # JSON is YAML; indented, so each problem still points at its own line.
    text = spec if isinstance(spec, str) else json.dumps(spec, indent=2)
    fd, path = tempfile.mkstemp(prefix="netreconciler-spec-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path, path


def _command(module: AnsibleModule, spec_path: str) -> list[str]:
    exe = module.params["executable"] or module.get_bin_path("reconciler", opt_dirs=FALLBACK_DIRS)
    if not exe:
        module.fail_json(msg="the reconciler command was not found: install netreconciler or set executable")
    verb = "apply" if module.params["state"] == "present" else "destroy"
    cmd = [exe, verb, spec_path, "-o", "json", "-q"]
    if module.check_mode:
        cmd.append("--dry-run")
    if module.params["state_dir"]:
        cmd += ["--state-dir", module.params["state_dir"]]
    return cmd


def _diff(plan: list[dict[str, Any]]) -> dict[str, Any]:
    before = {f"{a['kind']} {a['id']}": a["before"] for a in plan if a["before"] is not None}
    after = {f"{a['kind']} {a['id']}": a["after"] for a in plan if a["after"] is not None}
    return {"before": before, "after": after, "before_header": "host", "after_header": "spec"}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[("src", "spec")],
        mutually_exclusive=[("src", "spec")],
        supports_check_mode=True,
    )
    spec_path, temporary = _spec_file(module)
    cmd = _command(module, spec_path)
    try:
        rc, out, err = module.run_command(cmd, environ_update={"NO_COLOR": "1"})
    finally:
        if temporary:
            os.unlink(temporary)
    if temporary:
        out, err = out.replace(temporary, INLINE_LABEL), err.replace(temporary, INLINE_LABEL)
    problems = [line for line in err.splitlines() if line.strip()]
    if rc != 0:
        # rc is reported only here: the CLI's exit codes (1 spec or apply, 3 lock, 4 privileges) explain it.
        module.fail_json(
            msg="\n".join(problems) or f"reconciler exited {rc}", problems=problems, rc=rc, cmd=cmd
        )
    try:
        result = json.loads(out)
    except ValueError:
        module.fail_json(msg="the reconciler printed no JSON plan", stdout=out, stderr=err, cmd=cmd)
    plan = result["actions"]
    rendered = [f"{SIGNS[a['op']]} {a['kind']} {a['id']}" for a in plan]
    response: dict[str, Any] = {
        "changed": bool(plan),
        "plan": plan,
        "summary": result["summary"],
        "rendered": rendered,
        "applied": result["applied"],
    }
    if module._diff:
        response["diff"] = _diff(plan)
    # What the apply did besides its plan, e.g. a namespace that processes still hold.
    for notice in result.get("notices", []):
        module.warn(notice)
    module.exit_json(**response)


if __name__ == "__main__":
    main()
