"""What a user looks at: figures (``figures``), self-contained HTML pages (``page``), the circuits page of a run or
model (``inspection``, ``inspect_page``), the four-paper report (``report``, ``report_page``) and the tables of
claims (``claims_table``)."""
