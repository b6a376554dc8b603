"""Autograding for the attncourse exercises.

Modules:
    checks      one ``check_<task>`` per exercise task, called by the notebooks' test cells
    core        tasks, cases, comparison per the tolerance policy, failure messages
    mistakes    the catalogue of typical mistakes and the diagnosis that names them
    tripwire    delegation refusal and protection of the kernel against exits
    assignments one module per assignment: tasks, cases, mistakes, checks
    selfcheck   ``attncourse check NOTEBOOK``: grade a notebook without nbgrader
    release     regenerate ``exercises/`` with nbgrader and the self-study hidden tests

See AUTHORING.md in this folder for how to add an assignment.
"""

from . import assignments  # noqa: F401  (registers every task and mistake)
from .tripwire import protect_kernel  # noqa: F401
