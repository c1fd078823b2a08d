"""lm-eval task folders of sighead-eval (data only; shipped in the wheel as `sighead_eval.tasks`)."""
