"""Members: enrolment, loyalty numbers, contact details, consents."""
