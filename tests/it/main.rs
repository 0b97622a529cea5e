mod sim_cluster;
