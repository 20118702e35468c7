"""Pictures and exports: PNG figures (`render`), terminal pictures (`terminal`) and TIFF export
(`export`) of patterns, volumes, reconstructions and curves.

May import the base and every stage (it draws what they make)."""
