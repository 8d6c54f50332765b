"""Users, the extension namespace, SIP credentials, and the subscriber table Kamailio reads."""
