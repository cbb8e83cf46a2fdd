"""Policy fine-tuning (SFT) on expert demonstrations: chat rendering with an exact assistant-token loss mask,
the SFT data for the shared trainer, periodic episode evaluation, and the run directory as a policy.

Above training and agents in the layering (it renders through `agents.prompts` and trains with
`training.trainer`); demonstrations themselves come from `agents.collect`.
"""
