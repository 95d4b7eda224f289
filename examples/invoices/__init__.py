"""The invoice case study: ``examples.invoices.workflow:invoice_workflow``."""
