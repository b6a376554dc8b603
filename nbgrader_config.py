"""nbgrader configuration: the repository root is the course directory.

``solutions/`` holds the source notebooks and ``exercises/`` the student release. The
gradebook (``gradebook.db``) stays out of git; ``python -m attncourse.grading.release``
uses a throwaway gradebook of its own. nbgrader runs ``alembic`` by name, so the virtual
environment's ``bin`` must be on PATH (the release script sees to it).
"""

import os

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

COURSE_ROOT = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = COURSE_ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(COURSE_ROOT, "gradebook.db")

# A cell that runs longer than this is interrupted; grading goes on with the next cell.
c.ExecutePreprocessor.timeout = 30


def _cell_timeout(cell, default=30, setup=300):
    """The set-up cell imports torch, slow on a busy machine: it gets more time."""
    is_setup = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "setup"
    return setup if is_setup else default


c.ExecutePreprocessor.timeout_func = _cell_timeout
