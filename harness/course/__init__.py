"""The course: break-and-fix challenges and their grader, the notebooks' helpers, workshops, the
classroom image and the classroom server (``course/hub``). Everything here runs labs through
:mod:`harness.runner` and :mod:`harness.check`; nothing below imports it."""
