"""The unseen-GPU/LLM predictor: gradient-boosted corrections, its evaluation and calibration."""
