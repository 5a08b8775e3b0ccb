"""The built-in universe: Gaussian initial conditions, LPT particles and the store generator."""
