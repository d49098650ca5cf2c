"""Trainer rewards: each trainer's reward entry point, applying the verifier and extraction policy a
curriculum row's labels were measured with (`pipeline.rewards.trainers`)."""
