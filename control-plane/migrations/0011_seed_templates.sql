-- Seed templates: a cloud-config product may name, per file, a template
-- that replaces the built-in NoCloud meta-data or network-config, or the
-- configdrive meta_data.json or network_data.json of Ironic nodes. The
-- format column repeats the template's format so that a product names at
-- most one template per file.
CREATE TABLE product_seed_templates (
    product_id   INTEGER NOT NULL REFERENCES products(id),
    -- meta-data | network-config | openstack-meta-data | openstack-network-data
    format       TEXT NOT NULL,
    template_id  INTEGER NOT NULL REFERENCES install_templates(id),
    PRIMARY KEY (product_id, format)
);

CREATE INDEX product_seed_templates_template ON product_seed_templates(template_id);
