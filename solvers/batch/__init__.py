"""Offline batch jobs with deadlines over time slots: the problem, its MILP (HiGHS) and
CP-SAT models, the rules operators use today, and an independent checker."""
