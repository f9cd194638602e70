"""Fleet firmware roll-outs: `plan` (pure: fleet + spec -> steps, progress + event -> next step)."""
