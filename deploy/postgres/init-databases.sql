-- Run once by the postgres image on an empty data directory
-- (/docker-entrypoint-initdb.d): one database per service, each with its
-- own owner. The passwords are placeholders: change them here and in
-- compose.yaml together.
CREATE ROLE orders_app LOGIN PASSWORD 'CHANGE-ME-orders-db-password';
CREATE DATABASE orders OWNER orders_app;
CREATE ROLE inventory_app LOGIN PASSWORD 'CHANGE-ME-inventory-db-password';
CREATE DATABASE inventory OWNER inventory_app;
