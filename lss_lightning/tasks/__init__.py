"""Tasks: LightningModules and their losses."""
