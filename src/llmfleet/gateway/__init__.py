"""The edge gateway: answers nginx's auth_request with admit or refuse, from API keys and
per-tier rate limits kept in Redis. nginx keeps pushing the bytes; the gateway only decides."""
