"""etcd side of bench/run.py --with-etcd (sidebyside.py); gen/ comes from regen_stubs.py."""
