"""nbgrader configuration: the repository root is the course directory.

``solutions/`` holds the source notebooks and ``exercises/`` the student release. The
gradebook (``gradebook.db``) stays out of git; ``python -m attncourse.grading.release``
uses a throwaway gradebook of its own. nbgrader runs ``alembic`` by name, so the virtual
environment's ``bin`` must be on PATH (the release script sees to it).

Autograding runs every submission with the course's sandboxed engine
(``attncourse.grading.nbgrader_plugin``): the student's code in an isolated process, the
checks and their verdicts in nbgrader's own. See the instructors' appendix of the book.
"""

import os

from attncourse.grading.nbgrader_plugin import configure

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

COURSE_ROOT = os.path.dirname(os.path.abspath(__file__))

c.CourseDirectory.root = COURSE_ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(COURSE_ROOT, "gradebook.db")

# A cell that runs longer than 30 seconds is stopped and grading goes on with the next
# cell; the set-up cell, which imports torch, gets 300 seconds.
configure(c, timeout=30, setup_timeout=300)
