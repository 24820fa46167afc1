"""Per-LLM regressions of energy and runtime on token counts: forms, selection by CV, the gate."""
