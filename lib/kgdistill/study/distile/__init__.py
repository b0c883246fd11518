"""Notebook 06 and Table 1's added DistilE row: grids of DistilE runs (``grid``), their curves and
claims, DistilE sized beside MetaSD (``in_table1``) and the run plans of both (``planning``)."""
