-- One database and one owner per service: no service can read another's tables.
CREATE USER intake WITH PASSWORD 'intake';
CREATE USER eligibility WITH PASSWORD 'eligibility';
CREATE USER routing WITH PASSWORD 'routing';
CREATE USER notify WITH PASSWORD 'notify';
CREATE DATABASE intake OWNER intake;
CREATE DATABASE eligibility OWNER eligibility;
CREATE DATABASE routing OWNER routing;
CREATE DATABASE notify OWNER notify;
