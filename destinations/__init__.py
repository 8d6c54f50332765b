"""Destinations (where a call goes next) and the checks that they exist: below every flow
and every resource that stores one."""
