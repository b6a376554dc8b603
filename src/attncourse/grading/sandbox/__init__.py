"""The sandbox of the trusted grader: a separate, isolated process that runs the student's
code and answers in plain data.

    wire        the plain-data format that crosses the boundary (both sides)
    worker      the program that runs inside the sandbox (the student's side)
    isolation   starting, limiting, measuring and stopping the sandbox (the trusted side)
"""
