"""Power-law fits (Equation 2 of the paper) with bootstrap confidence intervals."""
