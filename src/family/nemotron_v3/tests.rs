//! Unit tests of the NemotronV3 rules: one per SPEC rule and table row, on exact plans.
