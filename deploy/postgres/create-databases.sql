-- The platform's databases (names as in xietong/settings.py), created when PostgreSQL
-- initialises an empty data directory. Used by docker-compose.yml and tests/containers.py.
CREATE DATABASE xietong_registry;  -- catalog, subscriptions and access of the registry
CREATE DATABASE xietong_credit;    -- the credit database, rebuilt from the record topics
CREATE DATABASE xietong_schemas;   -- Apicurio Registry's storage
