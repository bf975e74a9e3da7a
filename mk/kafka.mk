# Apache Kafka for the tests: the broker and its CLI tools as jars from Maven Central (no release
# tarball), run in KRaft mode by app/local/kafka.py. Included by the main Makefile.
#
# KAFKA_VERSION is the one pin: the pom takes it as -Dkafka.version and app/local/kafka_jars.py
# reads it from this line, so both agree on .tools/kafka-<version>/. Kafka 4.x, the newest
# release: it is what production runs, and aiokafka 0.14 speaks every API we use with it.
KAFKA_VERSION := 4.4.0
KAFKA_HOME    := .tools/kafka-$(KAFKA_VERSION)
# Written last, after the jars are all in place: an interrupted fetch leaves no stamp, and
# app/local/kafka_jars.py trusts libs/ only when the stamp is there.
KAFKA_STAMP   := $(KAFKA_HOME)/.fetched

.PHONY: kafka

kafka: $(KAFKA_STAMP) ## fetch Apache Kafka (broker + CLI tools, KAFKA_VERSION) into .tools/ with Maven

$(KAFKA_STAMP): mk/kafka/pom.xml
	@command -v mvn >/dev/null 2>&1 || { echo "make kafka needs Maven: apt-get install maven"; exit 1; }
	@command -v java >/dev/null 2>&1 || { echo "Apache Kafka needs Java 17+: apt-get install openjdk-17-jre-headless"; exit 1; }
	@echo "fetching Apache Kafka $(KAFKA_VERSION) and its runtime dependencies into $(KAFKA_HOME)/libs ..."
	@rm -rf $(KAFKA_HOME)/libs.partial $(KAFKA_STAMP) $(KAFKA_HOME)/classes.jsa
	mvn -q -B -Dstyle.color=never -f mk/kafka/pom.xml -Dkafka.version=$(KAFKA_VERSION) \
	  dependency:copy-dependencies -DincludeScope=runtime \
	  -DoutputDirectory=$(CURDIR)/$(KAFKA_HOME)/libs.partial
	@rm -rf $(KAFKA_HOME)/libs && mv $(KAFKA_HOME)/libs.partial $(KAFKA_HOME)/libs
	@touch $@
